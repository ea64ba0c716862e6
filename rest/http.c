/* SPDX-License-Identifier: EPL-2.0
 * http.c: libmicrohttpd glue. Runs MHD with its own thread pool on a
 * listening socket made by main.c, matches method and path to a route,
 * collects POST bodies (64 KiB at most, 413 beyond), and turns the
 * response a handler left in struct chat_req into an MHD response with
 * JSON headers. Every answered request is counted in the metrics with its
 * route and status. Unknown paths get a JSON 404, known paths with
 * another method a JSON 405 with an Allow header.
 */
#include "rest.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- response helpers -------------------------------------------------- */

static void set_resp(struct chat_req *q, unsigned status, const char *ctype, char *body, size_t len)
{
	free(q->resp);
	q->status = status;
	q->content_type = ctype;
	q->resp = body;
	q->resp_len = body ? len : 0;
}

void chat_http__text(struct chat_req *q, unsigned status, const char *ctype, char *body, size_t len)
{
	set_resp(q, status, ctype, body, len);
}

void chat_http__json(struct chat_req *q, unsigned status, char *body)
{
	if(!body){
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	set_resp(q, status, "application/json", body, strlen(body));
}

void chat_http__jsonbuf(struct chat_req *q, unsigned status, struct chat_buf *b)
{
	char *data = b->data;
	size_t len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	if(!data){
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	set_resp(q, status, "application/json", data, len);
}

void chat_http__error(struct chat_req *q, unsigned status, const char *code, const char *reason)
{
	json_t *o = json_object();
	char *s = NULL;
	if(o){
		json_object_set_new(o, "error", json_string(code));
		json_object_set_new(o, "reason", json_string(reason));
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
	}
	if(!s){
		/* Out of memory: a static body copied by MHD. */
		set_resp(q, 500, "application/json", NULL, 0);
		return;
	}
	set_resp(q, status, "application/json", s, strlen(s));
}

void chat_http__db_error(struct chat_req *q, enum chat_db_rc rc)
{
	if(rc == CHAT_DB_DOWN){
		q->retry_after_s = 1;
		chat_http__error(q, 503, "unavailable", "the database is unavailable, try again shortly");
	}else{
		chat_http__error(q, 500, "internal", "database error");
	}
}

int chat_http__append_jstr(struct chat_buf *b, const char *s)
{
	json_t *j = json_string(s ? s : "");
	if(!j) return -1;
	char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
	json_decref(j);
	if(!d) return -1;
	int rc = chat_buf_puts(b, d);
	free(d);
	return rc;
}

/* ---- request helpers --------------------------------------------------- */

bool chat_http__arg(struct chat_req *q, const char *key, const char **value)
{
	const char *v = NULL;
	size_t vlen = 0;
	if(MHD_lookup_connection_value_n(q->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &vlen) != MHD_YES)
		return false;
	*value = v ? v : "";
	return true;
}

const char *chat_http__header(struct chat_req *q, const char *name)
{
	return MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, name);
}

size_t chat_http__client_addr(struct chat_req *q, unsigned char out[16])
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if(!ci || !ci->client_addr) return 0;
	const struct sockaddr *sa = ci->client_addr;
	if(sa->sa_family == AF_INET){
		memcpy(out, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return 4;
	}
	if(sa->sa_family == AF_INET6){
		const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		if(IN6_IS_ADDR_V4MAPPED(a)){
			memcpy(out, a->s6_addr + 12, 4);
			return 4;
		}
		memcpy(out, a->s6_addr, 16);
		return 16;
	}
	return 0;
}

static int hexval(char c)
{
	if(c >= '0' && c <= '9') return c - '0';
	if(c >= 'a' && c <= 'f') return c - 'a' + 10;
	if(c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* ---- routing ----------------------------------------------------------- */

enum method { M_GET, M_POST, M_OTHER };

/* Path -> route, with the one path parameter ({peer} or {gid}) copied
 * into q->param. Returns CHAT_R_UNMATCHED for unknown paths. */
static enum chat_route match(struct chat_req *q, const char *url)
{
	static const char conv[] = "/v1/conversations/";
	static const char grp[] = "/v1/groups/";
	static const char tail[] = "/messages";
	if(strcmp(url, "/v1/login") == 0) return CHAT_R_LOGIN;
	if(strcmp(url, "/v1/inbox") == 0) return CHAT_R_INBOX;
	if(strcmp(url, "/v1/conversations") == 0) return CHAT_R_CONVERSATIONS;
	if(strcmp(url, "/v1/presence") == 0) return CHAT_R_PRESENCE;
	if(strcmp(url, "/healthz") == 0) return CHAT_R_HEALTHZ;
	if(strcmp(url, "/metrics") == 0) return CHAT_R_METRICS;

	const char *rest = NULL;
	enum chat_route r = CHAT_R_UNMATCHED;
	if(strncmp(url, conv, sizeof conv - 1) == 0){
		rest = url + sizeof conv - 1;
		r = CHAT_R_CONV_MESSAGES;
	}else if(strncmp(url, grp, sizeof grp - 1) == 0){
		rest = url + sizeof grp - 1;
		r = CHAT_R_GROUP_MESSAGES;
	}else{
		return CHAT_R_UNMATCHED;
	}
	const char *slash = strchr(rest, '/');
	if(!slash || slash == rest || strcmp(slash, tail) != 0) return CHAT_R_UNMATCHED;
	size_t n = (size_t)(slash - rest);
	/* An invalid id still matches the route (400 from the handler, not
	 * 404), so a client learns what was wrong. */
	q->param_valid = chat_id_validn(rest, n);
	if(q->param_valid){
		memcpy(q->param, rest, n);
		q->param[n] = '\0';
	}
	return r;
}

static bool route_is_post(enum chat_route r)
{
	return r == CHAT_R_LOGIN;
}

static void dispatch(struct chat_req *q, enum method m)
{
	if(q->route == CHAT_R_UNMATCHED){
		chat_http__error(q, 404, "not_found", "no such endpoint");
		return;
	}
	bool want_post = route_is_post(q->route);
	if((want_post && m != M_POST) || (!want_post && m != M_GET)){
		q->allow = want_post ? "POST" : "GET, HEAD";
		chat_http__error(q, 405, "method_not_allowed",
				want_post ? "this endpoint takes POST" : "this endpoint takes GET");
		return;
	}
	if(q->body_overflow){
		chat_http__error(q, 413, "too_large", "request body over 64 KiB");
		return;
	}
	switch(q->route){
	case CHAT_R_LOGIN: chat_auth__login(q); return;
	case CHAT_R_HEALTHZ: chat_route__healthz(q); return;
	case CHAT_R_METRICS: chat_route__metrics(q); return;
	default: break;
	}
	if(!chat_auth__bearer(q)) return;
	switch(q->route){
	case CHAT_R_INBOX: chat_route__inbox(q); break;
	case CHAT_R_CONVERSATIONS: chat_route__conversations(q); break;
	case CHAT_R_CONV_MESSAGES: chat_route__conv_messages(q); break;
	case CHAT_R_GROUP_MESSAGES: chat_route__group_messages(q); break;
	case CHAT_R_PRESENCE: chat_route__presence(q); break;
	default: chat_http__error(q, 404, "not_found", "no such endpoint"); break;
	}
}

static enum MHD_Result send_response(struct chat_req *q)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(q->resp_len, q->resp,
			q->resp ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if(!resp) return MHD_NO;
	q->resp = NULL; /* MHD owns it now */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
			q->content_type ? q->content_type : "application/json");
	if(q->no_store || q->route != CHAT_R_METRICS){
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	}
	if(q->allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, q->allow);
	if(q->retry_after_s > 0){
		char ra[24];
		snprintf(ra, sizeof ra, "%d", q->retry_after_s);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if(q->status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	enum MHD_Result rc = MHD_queue_response(q->conn, q->status, resp);
	MHD_destroy_response(resp);
	chat_metrics__observe(&q->rest->metrics, q->route, q->status, chat_mono_ns() - q->start_ns);
	return rc;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
		const char *method, const char *version, const char *upload_data,
		size_t *upload_data_size, void **con_cls)
{
	(void)version;
	struct chat_rest *r = cls;
	struct chat_req *q = *con_cls;
	enum method m = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0
		? M_GET : strcmp(method, MHD_HTTP_METHOD_POST) == 0 ? M_POST : M_OTHER;

	if(!q){
		q = calloc(1, sizeof *q);
		if(!q) return MHD_NO;
		q->rest = r;
		q->conn = conn;
		q->start_ns = chat_mono_ns();
		q->route = match(q, url);
		q->is_post = m == M_POST && route_is_post(q->route);
		*con_cls = q;
		if(q->is_post){
			/* Refuse an announced oversize body before reading it. */
			const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
					MHD_HTTP_HEADER_CONTENT_LENGTH);
			if(cl && strtoull(cl, NULL, 10) > CHAT_REST_BODY_MAX){
				chat_http__error(q, 413, "too_large", "request body over 64 KiB");
				return send_response(q);
			}
		}
		return MHD_YES;
	}
	q->conn = conn;
	if(*upload_data_size){
		if(q->is_post && !q->body_overflow){
			if(q->body.len + *upload_data_size > CHAT_REST_BODY_MAX){
				q->body_overflow = true;
				chat_buf_free(&q->body);
			}else if(chat_buf_append(&q->body, upload_data, *upload_data_size)){
				return MHD_NO;
			}
		}
		*upload_data_size = 0; /* bodies of other requests are read and dropped */
		return MHD_YES;
	}
	dispatch(q, m);
	return send_response(q);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
		enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct chat_req *q = *con_cls;
	if(!q) return;
	if(q->body.data) explicit_bzero(q->body.data, q->body.cap); /* a login body holds a password */
	chat_buf_free(&q->body);
	free(q->resp);
	free(q);
	*con_cls = NULL;
}

/* Percent-decoding of the path and query arguments. Unlike MHD's default
 * a %00 does not end the string early (which would make
 * "/v1/inbox%00junk" read as "/v1/inbox"): it becomes 0x7f, a byte no id,
 * route or number accepts. */
static size_t unescape_cb(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	char *w = s;
	for(const char *r = s; *r; r++){
		int hi, lo;
		if(r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0){
			int c = hi * 16 + lo;
			*w++ = c ? (char)c : '\x7f';
			r += 2;
		}else{
			*w++ = *r;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char line[512];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while(n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
	chat_rest__log("http: %s", line);
}

int chat_http__start(struct chat_rest *r, int listen_fd)
{
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	r->mhd = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, r,
			MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, (void *)NULL,
			MHD_OPTION_LISTEN_SOCKET, listen_fd,
			MHD_OPTION_THREAD_POOL_SIZE, (unsigned)r->cfg.threads,
			MHD_OPTION_NOTIFY_COMPLETED, completed_cb, (void *)r,
			MHD_OPTION_UNESCAPE_CALLBACK, unescape_cb, (void *)NULL,
			MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
			MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
			MHD_OPTION_END);
	return r->mhd ? 0 : -1;
}

void chat_http__stop(struct chat_rest *r)
{
	if(r->mhd) MHD_stop_daemon(r->mhd);
	r->mhd = NULL;
}

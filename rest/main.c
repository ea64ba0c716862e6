/* SPDX-License-Identifier: EPL-2.0
 * main.c: chat-rest's entry point. Resolves the configuration (flags, then
 * the --config file, then the local stack's defaults file, then built-in
 * defaults), fails loudly on anything malformed, opens the listening
 * socket, starts the HTTP thread pool and waits for SIGTERM/SIGINT to stop
 * cleanly. A database that is down is not a startup error: requests that
 * need it get 503 until it is back.
 */
#include "rest.h"
#include "conf.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static struct chat_rest g_rest;

void chat_rest__log(const char *fmt, ...)
{
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
	va_list ap;
	va_start(ap, fmt);
	flockfile(stderr);
	fprintf(stderr, "%s chat-rest: ", ts);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: chat-rest [--listen HOST:PORT] [--db CONNINFO] [--token-secret-file FILE]\n"
		"                 [--config FILE] [--threads N] [--token-ttl SECONDS]\n"
		"                 [--max-limit N] [--login-rate-user N] [--login-rate-addr N]\n"
		"\n"
		"  --listen HOST:PORT        address to serve HTTP on (default %s; [::1]:PORT for IPv6)\n"
		"  --db CONNINFO             libpq connection string (default: libpq's PG* variables)\n"
		"  --token-secret-file FILE  the secret that signs tokens (shared with the broker)\n"
		"  --config FILE             key = value file: listen, db, token_secret_file, threads,\n"
		"                            token_ttl_s, max_limit, login_rate_user, login_rate_addr\n"
		"  --threads N               HTTP worker threads, one database connection each (default %d)\n"
		"  --token-ttl SECONDS       lifetime of tokens issued by /v1/login (default %d)\n"
		"  --max-limit N             largest page; bigger ?limit values are clamped (default %d)\n"
		"  --login-rate-user N       login attempts per minute per user, 0 = no limit (default %d)\n"
		"  --login-rate-addr N       login attempts per minute per client address (default %d)\n"
		"  --print-sql               print the SQL statements chat-rest prepares, then exit\n"
		"\n"
		"Settings missing from flags and --config come from the defaults file\n"
		"($CHAT_CONFIG, else %s: db, token_secret_file, rest_listen).\n",
		CHAT_REST_LISTEN_DEFAULT, CHAT_REST_THREADS_DEFAULT, CHAT_REST_TTL_DEFAULT,
		CHAT_REST_MAX_LIMIT_DEFAULT, CHAT_REST_LOGIN_RATE_USER, CHAT_REST_LOGIN_RATE_ADDR,
		CHAT_DEFAULTS_FILE);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("chat-rest: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static long long parse_int(const char *what, const char *s, long long lo, long long hi)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if(!*s || *end || errno || v < lo || v > hi){
		die("%s must be an integer from %lld to %lld, not \"%s\"", what, lo, hi, s);
	}
	return v;
}

/* ---- configuration ------------------------------------------------------ */

struct raw_opts {
	const char *listen, *db, *secret, *threads, *ttl, *max_limit, *rate_user, *rate_addr;
};

static const char *const CONFIG_KEYS[] = {
	"listen", "db", "token_secret_file", "threads", "token_ttl_s", "max_limit",
	"login_rate_user", "login_rate_addr", NULL,
};

static void load_config_file(const char *path, struct chat_conf *c)
{
	int bad = 0;
	int rc = chat_conf_load(c, path, &bad);
	if(rc == -1) die("cannot read config file %s: %s", path, strerror(errno));
	if(rc == -2) die("config file %s: line %d is not \"key = value\"", path, bad);
	for(size_t i = 0; i < c->n; i++){
		bool known = false;
		for(const char *const *k = CONFIG_KEYS; *k && !known; k++) known = strcmp(*k, c->kv[i].key) == 0;
		if(!known) die("config file %s: unknown key \"%s\"", path, c->kv[i].key);
	}
}

/* The local stack's defaults file: optional when it is the compiled-in
 * path, required when $CHAT_CONFIG names it. */
static bool load_defaults_file(struct chat_conf *c)
{
	const char *env = getenv("CHAT_CONFIG");
	const char *path = env && *env ? env : CHAT_DEFAULTS_FILE;
	int bad = 0;
	int rc = chat_conf_load(c, path, &bad);
	if(rc == -1){
		if(!(env && *env) && errno == ENOENT) return false;
		die("cannot read defaults file %s: %s", path, strerror(errno));
	}
	if(rc == -2) die("defaults file %s: line %d is not \"key = value\"", path, bad);
	return true;
}

static const char *pick(const char *flag, const struct chat_conf *cfg, const char *key,
		const struct chat_conf *defs, const char *defkey)
{
	if(flag) return flag;
	const char *v = cfg ? chat_conf_get(cfg, key) : NULL;
	if(v) return v;
	return defs && defkey ? chat_conf_get(defs, defkey) : NULL;
}

static void resolve(struct chat_rest_config *out, const struct raw_opts *o, const char *config_path)
{
	struct chat_conf cfg = {0}, defs = {0};
	bool have_cfg = false, have_defs;
	if(config_path){
		load_config_file(config_path, &cfg);
		have_cfg = true;
	}
	have_defs = load_defaults_file(&defs);
	const struct chat_conf *c = have_cfg ? &cfg : NULL, *d = have_defs ? &defs : NULL;

	const char *v;
	v = pick(o->listen, c, "listen", d, "rest_listen");
	out->listen = strdup(v ? v : CHAT_REST_LISTEN_DEFAULT);
	v = pick(o->db, c, "db", d, "db");
	out->db = strdup(v ? v : "");
	v = pick(o->secret, c, "token_secret_file", d, "token_secret_file");
	out->token_secret_file = v ? strdup(v) : NULL;
	v = pick(o->threads, c, "threads", NULL, NULL);
	out->threads = v ? (int)parse_int("threads", v, 1, 256) : CHAT_REST_THREADS_DEFAULT;
	v = pick(o->ttl, c, "token_ttl_s", NULL, NULL);
	out->token_ttl_s = v ? parse_int("token_ttl_s", v, 1, 366LL * 86400) : CHAT_REST_TTL_DEFAULT;
	v = pick(o->max_limit, c, "max_limit", NULL, NULL);
	out->max_limit = v ? (int)parse_int("max_limit", v, 1, 10000) : CHAT_REST_MAX_LIMIT_DEFAULT;
	v = pick(o->rate_user, c, "login_rate_user", NULL, NULL);
	out->login_rate_user = v ? (int)parse_int("login_rate_user", v, 0, 1000000) : CHAT_REST_LOGIN_RATE_USER;
	v = pick(o->rate_addr, c, "login_rate_addr", NULL, NULL);
	out->login_rate_addr = v ? (int)parse_int("login_rate_addr", v, 0, 1000000) : CHAT_REST_LOGIN_RATE_ADDR;
	chat_conf_free(&cfg);
	chat_conf_free(&defs);

	if(!out->listen || !out->db) die("out of memory");
	if(!out->token_secret_file){
		die("no token secret: pass --token-secret-file FILE (or token_secret_file in the config "
				"or defaults file)");
	}
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(out->db, &perr);
	if(!opts){
		size_t n = perr ? strcspn(perr, "\n") : 0;
		die("bad database connection string: %.*s", (int)n, perr ? perr : "out of memory");
	}
	PQconninfoFree(opts);
}

static void config_free(struct chat_rest_config *c)
{
	free(c->listen);
	free(c->db);
	free(c->token_secret_file);
	memset(c, 0, sizeof *c);
}

/* ---- listening socket ----------------------------------------------------- */

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static int open_listener(const char *spec, char *shown, size_t shownlen)
{
	char host[256], port[16];
	const char *colon = strrchr(spec, ':');
	if(!colon || !colon[1]) die("--listen must be HOST:PORT, not \"%s\"", spec);
	size_t hlen = (size_t)(colon - spec);
	const char *h = spec;
	if(hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']'){
		h = spec + 1;
		hlen -= 2;
	}
	if(hlen >= sizeof host || strlen(colon + 1) >= sizeof port) die("--listen \"%s\" is too long", spec);
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, sizeof port, "%s", colon + 1);
	parse_int("the --listen port", port, 0, 65535);

	struct addrinfo hints = {0}, *ai = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int gai = getaddrinfo(hlen ? host : NULL, port, &hints, &ai);
	if(gai) die("cannot resolve listen address \"%s\": %s", spec, gai_strerror(gai));
	int fd = -1, saved = 0;
	for(struct addrinfo *a = ai; a; a = a->ai_next){
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if(fd < 0){
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if(bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 511) == 0) break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if(fd < 0) die("cannot listen on %s: %s", spec, strerror(saved));
	int fl = fcntl(fd, F_GETFL);
	if(fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);

	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char hbuf[NI_MAXHOST] = "?", pbuf[NI_MAXSERV] = "?";
	if(getsockname(fd, (struct sockaddr *)&ss, &sl) == 0){
		getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
				NI_NUMERICHOST | NI_NUMERICSERV);
	}
	snprintf(shown, shownlen, strchr(hbuf, ':') ? "[%s]:%s" : "%s:%s", hbuf, pbuf);
	return fd;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"db", required_argument, NULL, 'd'},
		{"token-secret-file", required_argument, NULL, 's'},
		{"config", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"token-ttl", required_argument, NULL, 'T'},
		{"max-limit", required_argument, NULL, 'm'},
		{"login-rate-user", required_argument, NULL, 'u'},
		{"login-rate-addr", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"print-sql", no_argument, NULL, 'P'},
		{NULL, 0, NULL, 0},
	};
	struct raw_opts o = {0};
	const char *config_path = NULL;
	int ch;
	while((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1){
		switch(ch){
		case 'l': o.listen = optarg; break;
		case 'd': o.db = optarg; break;
		case 's': o.secret = optarg; break;
		case 'c': config_path = optarg; break;
		case 't': o.threads = optarg; break;
		case 'T': o.ttl = optarg; break;
		case 'm': o.max_limit = optarg; break;
		case 'u': o.rate_user = optarg; break;
		case 'a': o.rate_addr = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': puts("chat-rest (mosquitto-chat)"); return 0;
		case 'P': chat_db__print_sql(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if(optind < argc) die("unexpected argument \"%s\" (see --help)", argv[optind]);

	struct chat_rest *r = &g_rest;
	resolve(&r->cfg, &o, config_path);

	char err[512];
	if(chat_secret_load(&r->secret, r->cfg.token_secret_file, err, sizeof err)) die("%s", err);
	if(chat_auth__init(r, err, sizeof err)) die("%s", err);

	/* Workers inherit this mask: only the main thread takes the signals. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	char shown[300];
	int fd = open_listener(r->cfg.listen, shown, sizeof shown);
	chat_db__init(r);
	if(chat_http__start(r, fd)){
		close(fd);
		die("cannot start the HTTP server on %s", shown);
	}
	chat_rest__log("listening on %s (%d threads, max_limit %d, token ttl %llds)", shown,
			r->cfg.threads, r->cfg.max_limit, (long long)r->cfg.token_ttl_s);

	int sig = 0;
	while(sigwait(&stop, &sig) != 0) {}
	chat_rest__log("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");

	chat_http__stop(r); /* joins the workers; closes the listening socket */
	chat_db__shutdown();
	chat_auth__cleanup(r);
	config_free(&r->cfg);
	memset(&r->secret, 0, sizeof r->secret);
	return 0;
}

/* SPDX-License-Identifier: EPL-2.0
 * dm_bench.c: end-to-end latency and throughput of direct messages.
 * N sender/receiver pairs (libmosquitto clients, one network thread each)
 * exchange QoS 1 messages through (a) the broker with mosquitto_chat.so
 * (publish chat/dm/{peer}, receive the event on chat/inbox/{me}) and (b) a
 * plain mosquitto relaying the very same payloads (publish bench/{peer},
 * subscribe bench/{me}). Load is open-loop: a pacing thread publishes at a
 * fixed offered rate and stamps each payload with the time the message was
 * *scheduled*, so a stalled publisher shows up as latency instead of
 * hiding it (no coordinated omission). Latency = receipt at the peer -
 * scheduled send, on one clock (CLOCK_MONOTONIC, same machine).
 * The maximum sustained rate is found by raising the offered rate until a
 * step is not delivered in full at the offered rate or its p99 exceeds 1 s.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#define NS 1000000000LL
#define MAX_PAIRS 1000
#define MAX_RATES 16

enum target_kind { T_CHAT, T_PLAIN };

struct cfg {
	char *chat_host, *plain_host;     /* malloc'd */
	int chat_port, plain_port;
	const char *user_prefix;  /* chat users: {prefix}s{i} send to {prefix}r{i} */
	const char *password;
	int pairs;
	int rates[MAX_RATES];
	int nrates;
	double duration;          /* seconds per fixed-rate step */
	double search_duration;   /* seconds per step of the max-rate search */
	bool find_max;
	int max_start, max_limit;
	double max_p99_ms;
	int payload;              /* bytes of the published payload (about) */
	bool nodelay;
	bool quiet;
};

struct bench;

struct client {
	struct mosquitto *m;
	struct bench *b;
	int pair;
	bool receiver;
	char id[160];
	char topic[200];          /* sender: where to publish; receiver: what to subscribe */
	char sub[200];            /* sender: own inbox (chat) or "" */
	atomic_int state;         /* 0 new, 1 connected, 2 subscribed, -1 failed */
};

/* One step: nmsg messages at one offered rate. */
struct step {
	int64_t nmsg;
	int64_t *lat;             /* ns, per message number */
	atomic_uchar *seen;
	atomic_llong received, dups, acks, errors, pub_errors, bad;
	atomic_llong last_recv_ns;
	int64_t t0;               /* scheduled time of message 0 */
	char run[24];             /* run token in cids and bodies */
};

struct bench {
	const struct cfg *c;
	enum target_kind kind;
	const char *name;
	struct client *senders, *receivers;
	/* the step in progress, or NULL. Steps are freed only at the end, so a
	 * callback still holding an old one never reads freed memory. */
	struct step *_Atomic step;
	struct step **done;
	size_t ndone;
};

struct result {
	int offered;
	int64_t sent, received, lost, dups, errors, pub_errors;
	double delivered_rate;
	double p50, p90, p99, p999, max, mean; /* ms */
	bool ok;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = {(time_t)(t / NS), (long)(t % NS)};
	while(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR){
	}
}

static void sleep_ms(int ms)
{
	sleep_until(now_ns() + (int64_t)ms * 1000000);
}

/* ---- receiving ----------------------------------------------------------- */

static const char *find(const char *p, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	for(size_t i = 0; i + n <= len; i++){
		if(memcmp(p + i, needle, n) == 0) return p + i;
	}
	return NULL;
}

/* "body":"<sched_ns> <n> <run> ..." in a payload (our own JSON on the plain
 * broker, the inbox event on the chat broker). */
static bool parse_body(const char *p, size_t len, int64_t *sched, int64_t *n, const char **run, size_t *runlen)
{
	static const char key[] = "\"body\":\"";
	const char *end = p + len;
	const char *b = find(p, len, key);
	if(!b) return false;
	b += sizeof key - 1;
	char buf[96];
	size_t k = 0;
	while(b + k < end && k < sizeof buf - 1 && b[k] != '"'){
		buf[k] = b[k];
		k++;
	}
	buf[k] = '\0';
	char *e1, *e2;
	errno = 0;
	long long s = strtoll(buf, &e1, 10);
	if(e1 == buf || *e1 != ' ') return false;
	long long m = strtoll(e1 + 1, &e2, 10);
	if(e2 == e1 + 1 || *e2 != ' ' || errno) return false;
	const char *r = e2 + 1, *re = strchr(r, ' ');
	*sched = s;
	*n = m;
	*run = b + (r - buf);
	*runlen = re ? (size_t)(re - r) : strlen(r);
	return true;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
	(void)m;
	struct client *cl = ud;
	struct bench *b = cl->b;
	int64_t t = now_ns();
	struct step *st = atomic_load(&b->step);
	if(!st || !msg->payload) return;
	const char *p = msg->payload;
	size_t len = (size_t)msg->payloadlen;
	if(!cl->receiver){
		/* a chat sender's own inbox: acknowledgements and errors */
		if(find(p, len, "\"type\":\"error\"")) atomic_fetch_add(&st->errors, 1);
		else atomic_fetch_add(&st->acks, 1);
		return;
	}
	int64_t sched, n;
	const char *run;
	size_t runlen;
	if(!parse_body(p, len, &sched, &n, &run, &runlen) || n < 0 || n >= st->nmsg) {
		atomic_fetch_add(&st->bad, 1);
		return;
	}
	if(runlen != strlen(st->run) || memcmp(run, st->run, runlen) != 0){
		atomic_fetch_add(&st->bad, 1); /* a late message of an earlier step */
		return;
	}
	if(atomic_fetch_add(&st->seen[n], 1) != 0){
		atomic_fetch_add(&st->dups, 1);
		return;
	}
	st->lat[n] = t - sched;
	atomic_fetch_add(&st->received, 1);
	long long prev = atomic_load(&st->last_recv_ns);
	while(prev < t && !atomic_compare_exchange_weak(&st->last_recv_ns, &prev, t)){
	}
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	struct client *cl = ud;
	if(rc != 0){
		fprintf(stderr, "dm_bench: %s: CONNACK %d (%s)\n", cl->id, rc, mosquitto_connack_string(rc));
		atomic_store(&cl->state, -1);
		return;
	}
	atomic_store(&cl->state, 1);
	const char *sub = cl->receiver ? cl->topic : cl->sub;
	if(*sub){
		if(mosquitto_subscribe(m, NULL, sub, 1) != MOSQ_ERR_SUCCESS) atomic_store(&cl->state, -1);
	}else{
		atomic_store(&cl->state, 2);
	}
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted)
{
	(void)m;
	(void)mid;
	struct client *cl = ud;
	if(n < 1 || granted[0] > 2){
		fprintf(stderr, "dm_bench: %s: subscription refused\n", cl->id);
		atomic_store(&cl->state, -1);
		return;
	}
	atomic_store(&cl->state, 2);
}

/* ---- set-up -------------------------------------------------------------- */

static int client_start(struct bench *b, struct client *cl, const char *host, int port)
{
	const struct cfg *c = b->c;
	cl->b = b;
	atomic_init(&cl->state, 0);
	cl->m = mosquitto_new(cl->id, true, cl);
	if(!cl->m) return -1;
	if(b->kind == T_CHAT){
		char user[sizeof cl->id];
		snprintf(user, sizeof user, "%s", cl->id);
		char *colon = strchr(user, ':');
		if(colon) *colon = '\0';
		mosquitto_username_pw_set(cl->m, user, c->password);
	}
	mosquitto_int_option(cl->m, MOSQ_OPT_SEND_MAXIMUM, 1000);
	if(c->nodelay) mosquitto_int_option(cl->m, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_callback_set(cl->m, on_connect);
	mosquitto_subscribe_callback_set(cl->m, on_subscribe);
	mosquitto_message_callback_set(cl->m, on_message);
	int rc = mosquitto_connect(cl->m, host, port, 60);
	if(rc != MOSQ_ERR_SUCCESS){
		fprintf(stderr, "dm_bench: %s: connect to %s:%d: %s\n", cl->id, host, port, mosquitto_strerror(rc));
		return -1;
	}
	rc = mosquitto_loop_start(cl->m);
	if(rc != MOSQ_ERR_SUCCESS){
		fprintf(stderr, "dm_bench: %s: loop_start: %s\n", cl->id, mosquitto_strerror(rc));
		return -1;
	}
	return 0;
}

static void client_stop(struct client *cl)
{
	if(!cl->m) return;
	mosquitto_disconnect(cl->m);
	mosquitto_loop_stop(cl->m, false);
	mosquitto_destroy(cl->m);
	cl->m = NULL;
}

static int bench_open(struct bench *b, const struct cfg *c, enum target_kind kind)
{
	memset(b, 0, sizeof *b);
	b->c = c;
	b->kind = kind;
	b->name = kind == T_CHAT ? "chat" : "plain";
	atomic_init(&b->step, NULL);
	const char *host = kind == T_CHAT ? c->chat_host : c->plain_host;
	int port = kind == T_CHAT ? c->chat_port : c->plain_port;
	b->senders = calloc((size_t)c->pairs, sizeof *b->senders);
	b->receivers = calloc((size_t)c->pairs, sizeof *b->receivers);
	if(!b->senders || !b->receivers) return -1;
	for(int i = 0; i < c->pairs; i++){
		struct client *s = &b->senders[i], *r = &b->receivers[i];
		s->pair = r->pair = i;
		r->receiver = true;
		if(kind == T_CHAT){
			snprintf(s->id, sizeof s->id, "%ss%d:bench", c->user_prefix, i);
			snprintf(r->id, sizeof r->id, "%sr%d:bench", c->user_prefix, i);
			snprintf(s->topic, sizeof s->topic, "chat/dm/%sr%d", c->user_prefix, i);
			snprintf(s->sub, sizeof s->sub, "chat/inbox/%ss%d", c->user_prefix, i);
			snprintf(r->topic, sizeof r->topic, "chat/inbox/%sr%d", c->user_prefix, i);
		}else{
			snprintf(s->id, sizeof s->id, "bench-s%d", i);
			snprintf(r->id, sizeof r->id, "bench-r%d", i);
			snprintf(s->topic, sizeof s->topic, "bench/r%d", i);
			r->sub[0] = s->sub[0] = '\0';
			snprintf(r->topic, sizeof r->topic, "bench/r%d", i);
		}
		if(client_start(b, r, host, port) || client_start(b, s, host, port)) return -1;
	}
	int64_t deadline = now_ns() + 30 * NS;
	for(;;){
		int ready = 0, failed = 0;
		for(int i = 0; i < c->pairs; i++){
			int a = atomic_load(&b->senders[i].state), z = atomic_load(&b->receivers[i].state);
			ready += (a == 2) + (z == 2);
			failed += (a < 0) + (z < 0);
		}
		if(failed){
			fprintf(stderr, "dm_bench: %s: %d clients could not connect or subscribe\n", b->name, failed);
			return -1;
		}
		if(ready == 2 * c->pairs) break;
		if(now_ns() > deadline){
			fprintf(stderr, "dm_bench: %s: only %d of %d clients ready after 30 s\n", b->name, ready,
					2 * c->pairs);
			return -1;
		}
		sleep_ms(10);
	}
	return 0;
}

static void bench_close(struct bench *b)
{
	for(int i = 0; b->senders && i < b->c->pairs; i++) client_stop(&b->senders[i]);
	for(int i = 0; b->receivers && i < b->c->pairs; i++) client_stop(&b->receivers[i]);
	free(b->senders);
	free(b->receivers);
	for(size_t i = 0; i < b->ndone; i++){
		free(b->done[i]->lat);
		free(b->done[i]->seen);
		free(b->done[i]);
	}
	free(b->done);
}

/* ---- one step -------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double pct(const int64_t *sorted, int64_t n, double p)
{
	if(n <= 0) return NAN;
	int64_t k = (int64_t)ceil(p / 100.0 * (double)n) - 1;
	if(k < 0) k = 0;
	if(k >= n) k = n - 1;
	return (double)sorted[k] / 1e6;
}

static bool run_step(struct bench *b, int rate, double duration, struct result *res)
{
	const struct cfg *c = b->c;
	memset(res, 0, sizeof *res);
	res->offered = rate;
	struct step *st = calloc(1, sizeof *st);
	if(!st) return false;
	st->nmsg = (int64_t)llround(rate * duration);
	if(st->nmsg < 1) st->nmsg = 1;
	st->lat = calloc((size_t)st->nmsg, sizeof *st->lat);
	st->seen = calloc((size_t)st->nmsg, sizeof *st->seen);
	if(!st->lat || !st->seen){
		free(st->lat);
		free(st->seen);
		free(st);
		return false;
	}
	snprintf(st->run, sizeof st->run, "%08lx%04x", (unsigned long)(now_ns() & 0xffffffffUL),
			(unsigned)(rand() & 0xffff));
	struct step **nd = realloc(b->done, (b->ndone + 1) * sizeof *nd);
	if(!nd){
		free(st->lat);
		free(st->seen);
		free(st);
		return false;
	}
	b->done = nd;
	b->done[b->ndone++] = st;
	atomic_store(&b->step, st);

	size_t cap = (size_t)c->payload + 256;
	char *payload = malloc(cap);
	char *pad = malloc((size_t)c->payload + 1);
	if(!payload || !pad) abort();
	memset(pad, 'x', (size_t)c->payload);
	pad[c->payload] = '\0';

	int64_t interval = (int64_t)llround(1e9 / rate);
	st->t0 = now_ns() + 50000000LL;
	int64_t pub_errors = 0;
	for(int64_t n = 0; n < st->nmsg; n++){
		int64_t sched = st->t0 + n * interval;
		if(now_ns() < sched) sleep_until(sched);
		struct client *s = &b->senders[n % c->pairs];
		int len = snprintf(payload, cap, "{\"cid\":\"%s-%" PRId64 "\",\"body\":\"%" PRId64 " %" PRId64 " %s ",
				st->run, n, sched, n, st->run);
		int fill = c->payload - len - 2;
		if(fill < 0) fill = 0;
		len += snprintf(payload + len, cap - (size_t)len, "%.*s\"}", fill, pad);
		if(mosquitto_publish(s->m, NULL, s->topic, len, payload, 1, false) != MOSQ_ERR_SUCCESS) pub_errors++;
	}
	/* drain: wait for every message (or give up after 10 s without progress) */
	int64_t last_progress = now_ns(), last_count = -1;
	while(atomic_load(&st->received) + pub_errors < st->nmsg){
		int64_t got = atomic_load(&st->received);
		if(got != last_count){
			last_count = got;
			last_progress = now_ns();
		}else if(now_ns() - last_progress > 10 * NS){
			break;
		}
		sleep_ms(5);
	}
	if(b->kind == T_CHAT){
		/* the acknowledgements, for the record */
		int64_t until = now_ns() + 5 * NS;
		while(atomic_load(&st->acks) + atomic_load(&st->errors) < st->nmsg - pub_errors && now_ns() < until){
			sleep_ms(5);
		}
	}
	atomic_store(&b->step, NULL);

	int64_t got = atomic_load(&st->received);
	int64_t *v = malloc(sizeof *v * (size_t)(got ? got : 1));
	int64_t k = 0;
	double sum = 0;
	for(int64_t n = 0; n < st->nmsg && v; n++){
		if(atomic_load(&st->seen[n])){
			v[k++] = st->lat[n];
			sum += (double)st->lat[n];
		}
	}
	qsort(v, (size_t)k, sizeof *v, cmp_i64);
	res->sent = st->nmsg - pub_errors;
	res->received = k;
	res->lost = st->nmsg - k;
	res->dups = atomic_load(&st->dups);
	res->errors = atomic_load(&st->errors);
	res->pub_errors = pub_errors;
	res->p50 = pct(v, k, 50);
	res->p90 = pct(v, k, 90);
	res->p99 = pct(v, k, 99);
	res->p999 = pct(v, k, 99.9);
	res->max = k ? (double)v[k - 1] / 1e6 : NAN;
	res->mean = k ? sum / (double)k / 1e6 : NAN;
	/* delivered rate: messages received over the time from the first
	 * scheduled send to the last receipt */
	int64_t span = atomic_load(&st->last_recv_ns) - st->t0;
	res->delivered_rate = span > 0 ? (double)k / ((double)span / 1e9) : 0;
	if(res->delivered_rate > rate && k == st->nmsg) res->delivered_rate = rate;
	res->ok = res->lost == 0 && res->errors == 0 && res->delivered_rate >= 0.97 * rate && res->p99 <= c->max_p99_ms;
	free(v);
	free(payload);
	free(pad);
	/* let the broker settle between steps */
	sleep_ms(500);
	return true;
}

/* ---- report ------------------------------------------------------------------ */

static void print_result(const char *name, const struct result *r)
{
	printf("  %-6s offered %6d/s  delivered %8.0f/s  p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f ms"
			"  lost %" PRId64 "%s%s\n",
			name, r->offered, r->delivered_rate, r->p50, r->p90, r->p99, r->p999, r->max, r->lost,
			r->errors ? "  ERRORS" : "", r->dups ? "  DUPS" : "");
	if(r->errors || r->dups || r->pub_errors){
		printf("         errors %" PRId64 "  duplicates %" PRId64 "  publish failures %" PRId64 "\n", r->errors,
				r->dups, r->pub_errors);
	}
	fflush(stdout);
}

static int find_max(struct bench *b, struct result *best, struct result *first_fail)
{
	const struct cfg *c = b->c;
	memset(best, 0, sizeof *best);
	memset(first_fail, 0, sizeof *first_fail);
	int rate = c->max_start, lo = 0, hi = 0;
	struct result r;
	/* from the start rate, 1.5x up while steps pass (or down while they
	 * fail) until the other outcome is seen; then bisect twice */
	while(rate >= 20 && rate <= c->max_limit){
		if(!run_step(b, rate, c->search_duration, &r)) return -1;
		if(!c->quiet) print_result(b->name, &r);
		if(r.ok){
			lo = rate;
			*best = r;
			if(hi) break;
			rate = (int)(rate * 1.5);
		}else{
			hi = rate;
			*first_fail = r;
			if(lo) break;
			rate = (int)(rate / 1.5);
		}
	}
	for(int i = 0; i < 2 && lo && hi && hi - lo > lo / 10; i++){
		int mid = (lo + hi) / 2;
		if(!run_step(b, mid, c->search_duration, &r)) return -1;
		if(!c->quiet) print_result(b->name, &r);
		if(r.ok){
			lo = mid;
			*best = r;
		}else{
			hi = mid;
			*first_fail = r;
		}
	}
	return 0;
}

static void cell(char *buf, size_t n, double v)
{
	if(isnan(v)) snprintf(buf, n, "%s", "-");
	else snprintf(buf, n, "%.2f", v);
}

static void ratio(char *buf, size_t n, double a, double b)
{
	if(isnan(a) || isnan(b) || b <= 0 || a <= 0) snprintf(buf, n, "%s", "-");
	else if(a / b < 10) snprintf(buf, n, "%.2fx", a / b);
	else snprintf(buf, n, "%.0fx", a / b);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dm_bench [--chat HOST:PORT] [--plain HOST:PORT] [options]\n"
		"  --chat HOST:PORT      broker with mosquitto_chat.so (users PREFIXs{i} -> PREFIXr{i})\n"
		"  --plain HOST:PORT     plain mosquitto (anonymous, topics bench/r{i})\n"
		"  --user-prefix P       chat user names (default \"bench-\")\n"
		"  --password PW         password of every chat bench user (default \"bench\")\n"
		"  --pairs N             sender/receiver pairs (default 20)\n"
		"  --rates R1,R2,...     fixed offered rates, msg/s (default 100,5000)\n"
		"  --duration S          seconds per fixed-rate step (default 10)\n"
		"  --no-max              skip the search for the maximum sustained rate\n"
		"  --max-start R         first rate of the search (default 2000)\n"
		"  --max-limit R         highest rate tried (default 200000)\n"
		"  --search-duration S   seconds per search step (default 5)\n"
		"  --max-p99-ms MS       p99 bound of a sustained step (default 1000)\n"
		"  --payload BYTES       payload size (default 128)\n"
		"  --nagle               leave Nagle on in the bench clients (default: TCP_NODELAY;\n"
		"                        a chat sender also writes PUBACKs for its own inbox, so\n"
		"                        Nagle + delayed ACK stalls its next PUBLISH by up to 40 ms)\n"
		"  --quiet               only the final table\n");
}

static int parse_hostport(const char *s, char **host, int *port)
{
	const char *colon = strrchr(s, ':');
	if(!colon || colon == s) return -1;
	char *h = strndup(s, (size_t)(colon - s));
	if(!h) return -1;
	free(*host);
	*host = h;
	*port = atoi(colon + 1);
	return *port > 0 && *port < 65536 ? 0 : -1;
}

int main(int argc, char **argv)
{
	static struct cfg c = { /* static: reachable until exit, also on early returns */
		.user_prefix = "bench-", .password = "bench", .pairs = 20, .rates = {100, 5000}, .nrates = 2,
		.duration = 10, .search_duration = 5, .find_max = true, .max_start = 2000, .max_limit = 200000,
		.max_p99_ms = 1000, .payload = 128, .nodelay = true,
	};
	static const struct option opts[] = {
		{"chat", required_argument, NULL, 'c'}, {"plain", required_argument, NULL, 'p'},
		{"user-prefix", required_argument, NULL, 'u'}, {"password", required_argument, NULL, 'w'},
		{"pairs", required_argument, NULL, 'n'}, {"rates", required_argument, NULL, 'r'},
		{"duration", required_argument, NULL, 'd'}, {"no-max", no_argument, NULL, 'M'},
		{"max-start", required_argument, NULL, 's'}, {"max-limit", required_argument, NULL, 'l'},
		{"search-duration", required_argument, NULL, 'D'}, {"max-p99-ms", required_argument, NULL, 'P'},
		{"payload", required_argument, NULL, 'b'}, {"nagle", no_argument, NULL, 'N'},
		{"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	int o;
	while((o = getopt_long(argc, argv, "h", opts, NULL)) != -1){
		switch(o){
		case 'c':
			if(parse_hostport(optarg, &c.chat_host, &c.chat_port)){ usage(stderr); return 2; }
			break;
		case 'p':
			if(parse_hostport(optarg, &c.plain_host, &c.plain_port)){ usage(stderr); return 2; }
			break;
		case 'u': c.user_prefix = optarg; break;
		case 'w': c.password = optarg; break;
		case 'n': c.pairs = atoi(optarg); break;
		case 'r': {
			c.nrates = 0;
			char *save = NULL, *s = strdup(optarg);
			for(char *t = strtok_r(s, ",", &save); t && c.nrates < MAX_RATES; t = strtok_r(NULL, ",", &save)){
				c.rates[c.nrates++] = atoi(t);
			}
			free(s);
			break;
		}
		case 'd': c.duration = atof(optarg); break;
		case 'M': c.find_max = false; break;
		case 's': c.max_start = atoi(optarg); break;
		case 'l': c.max_limit = atoi(optarg); break;
		case 'D': c.search_duration = atof(optarg); break;
		case 'P': c.max_p99_ms = atof(optarg); break;
		case 'b': c.payload = atoi(optarg); break;
		case 'N': c.nodelay = false; break;
		case 'q': c.quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if((!c.chat_host && !c.plain_host) || c.pairs < 1 || c.pairs > MAX_PAIRS || c.duration <= 0 ||
			c.search_duration <= 0 || c.payload < 64 || c.payload > 60000 || c.max_start < 1){
		usage(stderr);
		return 2;
	}
	for(int i = 0; i < c.nrates; i++){
		if(c.rates[i] < 1){
			usage(stderr);
			return 2;
		}
	}
	srand((unsigned)now_ns());
	mosquitto_lib_init();
	int maj, min, rev;
	mosquitto_lib_version(&maj, &min, &rev);
	printf("dm_bench: %d pairs, QoS 1, payload %d B, open loop, %.0f s per fixed-rate step, clients %s, "
			"libmosquitto %d.%d.%d\n", c.pairs, c.payload, c.duration, c.nodelay ? "TCP_NODELAY" : "Nagle on", maj,
			min, rev);

	enum target_kind kinds[2];
	int nk = 0;
	if(c.chat_host) kinds[nk++] = T_CHAT;
	if(c.plain_host) kinds[nk++] = T_PLAIN;
	struct result fixed[2][MAX_RATES];
	struct result best[2], fail[2];
	memset(fixed, 0, sizeof fixed);
	memset(best, 0, sizeof best);
	memset(fail, 0, sizeof fail);
	int rc = 0;
	for(int t = 0; t < nk; t++){
		struct bench b;
		printf("== %s (%s:%d)\n", kinds[t] == T_CHAT ? "chat plugin" : "plain mosquitto",
				kinds[t] == T_CHAT ? c.chat_host : c.plain_host, kinds[t] == T_CHAT ? c.chat_port : c.plain_port);
		fflush(stdout);
		if(bench_open(&b, &c, kinds[t])){
			bench_close(&b);
			rc = 1;
			break;
		}
		struct result warm;
		run_step(&b, 200, 1.0, &warm); /* warm-up: connections, caches */
		for(int i = 0; i < c.nrates; i++){
			if(!run_step(&b, c.rates[i], c.duration, &fixed[kinds[t]][i])){
				rc = 1;
				break;
			}
			if(!c.quiet) print_result(b.name, &fixed[kinds[t]][i]);
		}
		if(rc == 0 && c.find_max){
			if(!c.quiet) printf("  searching the maximum sustained rate (%.0f s steps)\n", c.search_duration);
			if(find_max(&b, &best[kinds[t]], &fail[kinds[t]])) rc = 1;
		}
		bench_close(&b);
	}

	/* the table */
	printf("\n%-10s | %-57s | %-57s | %s\n", "", "chat plugin (chat/dm -> chat/inbox)",
			"plain mosquitto (bench/{peer})", "chat / plain");
	printf("%-10s | %9s %8s %8s %8s %8s %5s | %9s %8s %8s %8s %8s %5s | %6s %6s %6s\n", "offered/s", "deliv/s",
			"p50 ms", "p90 ms", "p99 ms", "max ms", "lost", "deliv/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
			"lost", "p50", "p99", "max");
	for(int i = 0; i < c.nrates; i++){
		const struct result *a = &fixed[T_CHAT][i], *p = &fixed[T_PLAIN][i];
		char s[12][24];
		cell(s[0], 24, a->p50); cell(s[1], 24, a->p90); cell(s[2], 24, a->p99); cell(s[3], 24, a->max);
		cell(s[4], 24, p->p50); cell(s[5], 24, p->p90); cell(s[6], 24, p->p99); cell(s[7], 24, p->max);
		ratio(s[8], 24, a->p50, p->p50); ratio(s[9], 24, a->p99, p->p99); ratio(s[10], 24, a->max, p->max);
		printf("%-10d | %9.0f %8s %8s %8s %8s %5" PRId64 " | %9.0f %8s %8s %8s %8s %5" PRId64 " | %6s %6s %6s\n",
				c.rates[i], a->delivered_rate, s[0], s[1], s[2], s[3], a->lost, p->delivered_rate, s[4], s[5], s[6],
				s[7], p->lost, s[8], s[9], s[10]);
	}
	if(c.find_max){
		const struct result *a = &best[T_CHAT], *p = &best[T_PLAIN];
		char s[12][24];
		cell(s[0], 24, a->p50); cell(s[1], 24, a->p90); cell(s[2], 24, a->p99); cell(s[3], 24, a->max);
		cell(s[4], 24, p->p50); cell(s[5], 24, p->p90); cell(s[6], 24, p->p99); cell(s[7], 24, p->max);
		ratio(s[8], 24, a->offered, p->offered);
		printf("%-10s | %9d %8s %8s %8s %8s %5" PRId64 " | %9d %8s %8s %8s %8s %5" PRId64 " | rate %s\n",
				"max sust.", a->offered, s[0], s[1], s[2], s[3], a->lost, p->offered, s[4], s[5], s[6], s[7], p->lost,
				s[8]);
		if(a->offered && p->offered){
			printf("max sustained rate: chat %d msg/s, plain %d msg/s (chat = %.0f%% of plain)\n", a->offered,
					p->offered, 100.0 * a->offered / p->offered);
		}
		for(int t = 0; t < 2; t++){
			if(fail[t].offered){
				printf("  %s: lowest failing step %d msg/s: delivered %.0f/s, p99 %.2f ms, lost %" PRId64 "\n",
						t == T_CHAT ? "chat" : "plain", fail[t].offered, fail[t].delivered_rate, fail[t].p99,
						fail[t].lost);
			}else if(best[t].offered){
				printf("  %s: never failed up to the limit\n", t == T_CHAT ? "chat" : "plain");
			}
		}
	}
	mosquitto_lib_cleanup();
	free(c.chat_host);
	free(c.plain_host);
	return rc;
}

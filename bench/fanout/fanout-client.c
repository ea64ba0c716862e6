/* SPDX-License-Identifier: EPL-2.0
 * fanout-client.c: the measuring side of the group fan-out benchmark.
 * One thread, one epoll set, N plain MQTT 3.1.1 connections (one per group
 * member, each subscribed to its own inbox at QoS 1): enough to hold 1,000
 * members without 1,000 threads or a client library's per-connection loop.
 * The first member sends M messages to chat/group/{gid}, one at a time; for
 * each it records the time from writing the PUBLISH to the moment the last
 * member's copy arrived (and the first, and the sender's own copy), then
 * prints one RESULT line. bench/fanout/fanout.py sets up the stack, the
 * users and the groups and turns RESULT lines into a table.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd;
	char user[65];
	char *pw;
	int state;           /* 0 connecting, 1 CONNACK seen, 2 SUBACK seen */
	unsigned char *rb;   /* read buffer */
	size_t rlen, rcap;
	int64_t last_msg;    /* highest message number seen (dedupe) */
};

static struct conn *conns;
static int nconn;
static int ep = -1;
static char gid[65];
static char run_tag[32];
static int nmsg = 20, warmup = 2, gap_ms = 50, timeout_ms = 20000, settle_ms = 1500;

/* per message: when it was written, how many members have it, first/last/ack */
static int64_t *t_sent, *t_first, *t_last, *t_ack;
static int *got;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "fanout-client: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* ---- packets ------------------------------------------------------------ */

static size_t put_str(unsigned char *p, const char *s)
{
	size_t n = strlen(s);
	p[0] = (unsigned char)(n >> 8);
	p[1] = (unsigned char)(n & 0xff);
	memcpy(p + 2, s, n);
	return n + 2;
}

static size_t put_len(unsigned char *p, size_t n)
{
	size_t i = 0;
	do{
		unsigned char b = n % 128;
		n /= 128;
		p[i++] = (unsigned char)(b | (n ? 0x80 : 0));
	}while(n);
	return i;
}

static void send_all(struct conn *c, const unsigned char *buf, size_t len)
{
	/* sockets are blocking for writes: packets here are small and the
	 * broker reads them at once, so this never waits for long */
	while(len){
		ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
		if(w < 0){
			if(errno == EINTR) continue;
			fprintf(stderr, "fanout-client: send to %s: %s\n", c->user, strerror(errno));
			exit(2);
		}
		buf += w;
		len -= (size_t)w;
	}
}

static void packet(struct conn *c, unsigned char type, const unsigned char *body, size_t blen)
{
	unsigned char *buf = malloc(blen + 5);
	if(!buf) die("malloc");
	buf[0] = type;
	size_t h = 1 + put_len(buf + 1, blen);
	memcpy(buf + h, body, blen);
	send_all(c, buf, h + blen);
	free(buf);
}

static void send_connect_subscribe(struct conn *c, int idx)
{
	unsigned char body[512];
	char clientid[140];
	snprintf(clientid, sizeof clientid, "%s:fanout%d", c->user, idx);
	size_t n = put_str(body, "MQTT");
	body[n++] = 4;                  /* 3.1.1 */
	body[n++] = 0x02 | 0x80 | 0x40; /* clean session, username, password */
	body[n++] = 600 >> 8;           /* keepalive 600 s: no PINGREQ during a run */
	body[n++] = 600 & 0xff;
	n += put_str(body + n, clientid);
	n += put_str(body + n, c->user);
	n += put_str(body + n, c->pw);
	packet(c, 0x10, body, n);

	char topic[128];
	snprintf(topic, sizeof topic, "chat/inbox/%s", c->user);
	n = 0;
	body[n++] = 0;
	body[n++] = 1; /* packet id */
	n += put_str(body + n, topic);
	body[n++] = 1; /* QoS 1 */
	packet(c, 0x82, body, n);
}

static void send_publish(struct conn *c, int k)
{
	unsigned char body[600];
	char topic[128], payload[256];
	snprintf(topic, sizeof topic, "chat/group/%s", gid);
	snprintf(payload, sizeof payload, "{\"cid\":\"fb-%s-%d\",\"body\":\"fanout %s %d\"}", run_tag, k, run_tag, k);
	size_t n = put_str(body, topic);
	uint16_t mid = (uint16_t)(k % 60000 + 2);
	body[n++] = (unsigned char)(mid >> 8);
	body[n++] = (unsigned char)(mid & 0xff);
	size_t pl = strlen(payload);
	memcpy(body + n, payload, pl);
	n += pl;
	packet(c, 0x32, body, n); /* PUBLISH, QoS 1 */
}

/* ---- receiving ---------------------------------------------------------- */

static void on_publish(struct conn *c, unsigned char flags, const unsigned char *p, size_t len, int64_t t)
{
	if(len < 2) return;
	size_t tl = (size_t)p[0] << 8 | p[1];
	if(2 + tl > len) return;
	size_t off = 2 + tl;
	int qos = (flags >> 1) & 3;
	if(qos > 0){
		if(off + 2 > len) return;
		unsigned char ack[2] = {p[off], p[off + 1]};
		off += 2;
		packet(c, qos == 1 ? 0x40 : 0x50, ack, 2);
	}
	/* the payload is JSON; find our marker without a parser */
	char marker[64];
	int ml = snprintf(marker, sizeof marker, "\"body\":\"fanout %s ", run_tag);
	const unsigned char *pl = p + off;
	size_t plen = len - off;
	for(size_t i = 0; i + (size_t)ml < plen; i++){
		if(memcmp(pl + i, marker, (size_t)ml) != 0) continue;
		int k = atoi((const char *)pl + i + ml);
		if(k < 0 || k >= nmsg + warmup || k <= c->last_msg) return;
		c->last_msg = k;
		got[k]++;
		if(!t_first[k]) t_first[k] = t;
		t_last[k] = t;
		if(c == &conns[0] && !t_ack[k]) t_ack[k] = t;
		return;
	}
}

static void handle(struct conn *c, int64_t t)
{
	for(;;){
		if(c->rcap - c->rlen < 4096){
			c->rcap = c->rcap ? c->rcap * 2 : 8192;
			c->rb = realloc(c->rb, c->rcap);
			if(!c->rb) die("realloc");
		}
		ssize_t r = recv(c->fd, c->rb + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
		if(r < 0){
			if(errno == EAGAIN || errno == EWOULDBLOCK) break;
			if(errno == EINTR) continue;
			fprintf(stderr, "fanout-client: recv from %s: %s\n", c->user, strerror(errno));
			exit(2);
		}
		if(r == 0){
			fprintf(stderr, "fanout-client: the broker closed %s's connection (state %d)\n", c->user, c->state);
			exit(2);
		}
		c->rlen += (size_t)r;
	}
	size_t pos = 0;
	while(c->rlen - pos >= 2){
		size_t len = 0, mult = 1, i = 1;
		int complete = 0;
		while(pos + i < c->rlen && i <= 4){
			unsigned char b = c->rb[pos + i];
			len += (b & 127) * mult;
			mult *= 128;
			i++;
			if(!(b & 128)){
				complete = 1;
				break;
			}
		}
		if(!complete || c->rlen - pos - i < len) break;
		unsigned char type = c->rb[pos];
		const unsigned char *body = c->rb + pos + i;
		switch(type >> 4){
		case 2: /* CONNACK */
			if(len < 2 || body[1] != 0){
				fprintf(stderr, "fanout-client: %s refused (CONNACK %d)\n", c->user, len >= 2 ? body[1] : -1);
				exit(2);
			}
			c->state = 1;
			break;
		case 9: /* SUBACK */
			if(len < 3 || body[2] >= 0x80){
				fprintf(stderr, "fanout-client: %s may not subscribe to its inbox\n", c->user);
				exit(2);
			}
			c->state = 2;
			break;
		case 3:
			on_publish(c, type & 0x0f, body, len, t);
			break;
		default: /* PUBACK for the sender, PINGRESP */
			break;
		}
		pos += i + len;
	}
	memmove(c->rb, c->rb + pos, c->rlen - pos);
	c->rlen -= pos;
}

static int poll_once(int wait_ms)
{
	struct epoll_event ev[256];
	int n = epoll_wait(ep, ev, 256, wait_ms);
	if(n < 0){
		if(errno == EINTR) return 0;
		die("epoll_wait");
	}
	int64_t t = now_ns();
	for(int i = 0; i < n; i++) handle(&conns[ev[i].data.u32], t);
	return n;
}

static void open_conn(int idx, int port)
{
	struct conn *c = &conns[idx];
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if(c->fd < 0) die("socket");
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if(connect(c->fd, (struct sockaddr *)&sa, sizeof sa)) die("connect");
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
	if(epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev)) die("epoll_ctl");
	c->last_msg = -1;
	send_connect_subscribe(c, idx);
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(int64_t *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof *v, cmp64);
	int i = (int)(p * (n - 1) + 0.5);
	return (double)v[i] / 1e6;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fanout-client --port PORT --group GID --members FILE [--messages N] [--warmup N]\n"
		"                     [--gap-ms MS] [--timeout-ms MS] [--settle-ms MS] [--tag TAG]\n"
		"FILE: one \"user password\" per line; the first line is the sender.\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int port = 0;
	const char *members = NULL;
	snprintf(run_tag, sizeof run_tag, "%ld", (long)getpid());
	for(int i = 1; i < argc; i++){
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if(!v) usage();
		if(!strcmp(a, "--port")) port = atoi(v);
		else if(!strcmp(a, "--group")) snprintf(gid, sizeof gid, "%s", v);
		else if(!strcmp(a, "--members")) members = v;
		else if(!strcmp(a, "--messages")) nmsg = atoi(v);
		else if(!strcmp(a, "--warmup")) warmup = atoi(v);
		else if(!strcmp(a, "--gap-ms")) gap_ms = atoi(v);
		else if(!strcmp(a, "--timeout-ms")) timeout_ms = atoi(v);
		else if(!strcmp(a, "--settle-ms")) settle_ms = atoi(v);
		else if(!strcmp(a, "--tag")) snprintf(run_tag, sizeof run_tag, "%s", v);
		else usage();
		i++;
	}
	if(!port || !gid[0] || !members || nmsg < 1 || warmup < 0) usage();

	FILE *f = fopen(members, "r");
	if(!f) die(members);
	char line[256];
	int cap = 0;
	while(fgets(line, sizeof line, f)){
		char u[65], p[129];
		if(sscanf(line, "%64s %128s", u, p) != 2) continue;
		if(nconn == cap){
			cap = cap ? cap * 2 : 64;
			conns = realloc(conns, (size_t)cap * sizeof *conns);
			if(!conns) die("realloc");
		}
		memset(&conns[nconn], 0, sizeof conns[nconn]);
		snprintf(conns[nconn].user, sizeof conns[nconn].user, "%s", u);
		conns[nconn].pw = strdup(p);
		nconn++;
	}
	fclose(f);
	if(nconn < 1) usage();

	int total = nmsg + warmup;
	t_sent = calloc((size_t)total, sizeof *t_sent);
	t_first = calloc((size_t)total, sizeof *t_first);
	t_last = calloc((size_t)total, sizeof *t_last);
	t_ack = calloc((size_t)total, sizeof *t_ack);
	got = calloc((size_t)total, sizeof *got);
	if(!t_sent || !t_first || !t_last || !t_ack || !got) die("calloc");
	ep = epoll_create1(EPOLL_CLOEXEC);
	if(ep < 0) die("epoll_create1");

	/* connect in waves: at most 64 connections waiting for their SUBACK */
	int64_t t0 = now_ns();
	int opened = 0, ready = 0;
	while(ready < nconn){
		int waiting = opened - ready;
		while(opened < nconn && waiting < 64){
			open_conn(opened++, port);
			waiting++;
		}
		poll_once(10);
		ready = 0;
		for(int i = 0; i < opened; i++) ready += conns[i].state == 2;
		if(now_ns() - t0 > (int64_t)timeout_ms * 3 * 1000000LL){
			fprintf(stderr, "fanout-client: only %d of %d members subscribed\n", ready, nconn);
			return 1;
		}
	}
	fprintf(stderr, "fanout-client: %d members connected and subscribed in %.2f s\n", nconn,
			(double)(now_ns() - t0) / 1e9);
	/* let the broker settle (presence debounce, writer catching up) */
	int64_t settle_end = now_ns() + (int64_t)settle_ms * 1000000LL;
	while(now_ns() < settle_end) poll_once(20);

	int failed = 0;
	for(int k = 0; k < total; k++){
		t_sent[k] = now_ns();
		send_publish(&conns[0], k);
		int64_t end = t_sent[k] + (int64_t)timeout_ms * 1000000LL;
		while(got[k] < nconn && now_ns() < end) poll_once(5);
		if(got[k] < nconn){
			fprintf(stderr, "fanout-client: message %d reached %d of %d members within %d ms\n", k, got[k], nconn,
					timeout_ms);
			failed++;
		}
		int64_t gap_end = now_ns() + (int64_t)gap_ms * 1000000LL;
		while(now_ns() < gap_end) poll_once(5);
	}

	int64_t *last = calloc((size_t)nmsg, sizeof *last), *first = calloc((size_t)nmsg, sizeof *first);
	int64_t *ack = calloc((size_t)nmsg, sizeof *ack);
	if(!last || !first || !ack) die("calloc");
	int n = 0;
	for(int k = warmup; k < total; k++){
		if(got[k] < nconn) continue;
		last[n] = t_last[k] - t_sent[k];
		first[n] = t_first[k] - t_sent[k];
		ack[n] = t_ack[k] - t_sent[k];
		n++;
	}
	if(n == 0){
		printf("RESULT members=%d messages=0 failed=%d\n", nconn, failed);
		return 1;
	}
	double p50 = pct(last, n, 0.5), p90 = pct(last, n, 0.9), mx = pct(last, n, 1.0), mn = pct(last, n, 0.0);
	printf("RESULT members=%d messages=%d failed=%d last_p50_ms=%.2f last_p90_ms=%.2f last_min_ms=%.2f "
			"last_max_ms=%.2f first_p50_ms=%.2f ack_p50_ms=%.2f\n",
			nconn, n, failed, p50, p90, mn, mx, pct(first, n, 0.5), pct(ack, n, 0.5));
	fflush(stdout);
	for(int i = 0; i < nconn; i++){
		close(conns[i].fd);
		free(conns[i].rb);
		free(conns[i].pw);
	}
	free(conns);
	free(last);
	free(first);
	free(ack);
	free(t_sent);
	free(t_first);
	free(t_last);
	free(t_ack);
	free(got);
	close(ep);
	return failed ? 1 : 0;
}

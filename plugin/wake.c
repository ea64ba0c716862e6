/* SPDX-License-Identifier: EPL-2.0
 * wake.c: waking the broker loop from the writer thread.
 * Mosquitto 2.0 sleeps up to 100 ms in epoll_wait and only runs TICK after
 * it returns, and its functions may not be called from other threads. So
 * the writer keeps one MQTT connection to the broker's own loopback
 * listener and, when it has results, writes a 2-byte PINGREQ: epoll_wait
 * returns at once, the broker answers the ping, and TICK publishes the
 * results in the same loop iteration. An atomic flag coalesces pokes until
 * the tick has consumed them. With plugin_opt_wakeup auto the listener is
 * found from this process's own listening sockets (/proc/self/fd and
 * /proc/self/net/tcp{,6}); listeners that do not answer a plain MQTT CONNECT
 * (TLS, websockets) are skipped.
 */
#include "chat.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

struct chat_wake {
	char mode[300];
	char user[64];
	char pass[80];
	char clientid[64];
	int fd;
	atomic_bool pending;
	atomic_bool connected;
	int64_t last_io_ns;
	int64_t next_try_ns;
	int backoff_ms;
};

struct chat_wake *chat_wake__new(const char *mode, const char *user, const char *password,
		const char *clientid)
{
	struct chat_wake *w = calloc(1, sizeof *w);
	if(!w) return NULL;
	snprintf(w->mode, sizeof w->mode, "%s", mode);
	snprintf(w->user, sizeof w->user, "%s", user);
	snprintf(w->pass, sizeof w->pass, "%s", password);
	snprintf(w->clientid, sizeof w->clientid, "%s", clientid);
	w->fd = -1;
	w->backoff_ms = 200;
	atomic_init(&w->pending, false);
	atomic_init(&w->connected, false);
	return w;
}

void chat_wake__free(struct chat_wake *w)
{
	if(!w) return;
	if(w->fd >= 0) close(w->fd);
	free(w);
}

bool chat_wake__connected(const struct chat_wake *w)
{
	return w && atomic_load(&w->connected);
}

static size_t put_str(unsigned char *p, const char *s)
{
	size_t n = strlen(s);
	p[0] = (unsigned char)(n >> 8);
	p[1] = (unsigned char)n;
	memcpy(p + 2, s, n);
	return n + 2;
}

/* Connect to one address, send CONNECT, wait for a successful CONNACK. */
static int try_connect(struct chat_wake *w, const struct sockaddr *sa, socklen_t salen)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if(fd < 0) return -1;
	struct timeval tv = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if(connect(fd, sa, salen)){
		close(fd);
		return -1;
	}
	unsigned char var[512];
	size_t n = 0;
	static const unsigned char hdr[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60};
	memcpy(var, hdr, sizeof hdr);
	n = sizeof hdr;
	n += put_str(var + n, w->clientid);
	n += put_str(var + n, w->user);
	n += put_str(var + n, w->pass);
	unsigned char pkt[520];
	size_t k = 0;
	pkt[k++] = 0x10;
	size_t rl = n;
	do{
		unsigned char b = rl % 128;
		rl /= 128;
		if(rl) b |= 0x80;
		pkt[k++] = b;
	}while(rl);
	memcpy(pkt + k, var, n);
	k += n;
	if(send(fd, pkt, k, MSG_NOSIGNAL) != (ssize_t)k){
		close(fd);
		return -1;
	}
	unsigned char ack[4];
	size_t got = 0;
	while(got < 4){
		ssize_t r = recv(fd, ack + got, 4 - got, 0);
		if(r <= 0){
			close(fd);
			return -1;
		}
		got += (size_t)r;
	}
	if(ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0){
		close(fd);
		return -1;
	}
	/* non-blocking from now on: pokes must never stall the writer */
	int fl = fcntl(fd, F_GETFL);
	if(fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK)){
		close(fd);
		return -1;
	}
	return fd;
}

/* Inodes of this process's sockets. */
static size_t own_sockets(unsigned long *inodes, size_t max)
{
	size_t n = 0;
	DIR *d = opendir("/proc/self/fd");
	if(!d) return 0;
	struct dirent *de;
	while((de = readdir(d)) && n < max){
		char path[64], link[64];
		snprintf(path, sizeof path, "/proc/self/fd/%.20s", de->d_name);
		ssize_t l = readlink(path, link, sizeof link - 1);
		if(l <= 0) continue;
		link[l] = '\0';
		unsigned long ino;
		if(sscanf(link, "socket:[%lu]", &ino) == 1) inodes[n++] = ino;
	}
	closedir(d);
	return n;
}

struct cand {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Listening TCP sockets of this process, as loopback addresses to dial. */
static size_t listeners(struct cand *out, size_t max)
{
	unsigned long inodes[4096];
	size_t ni = own_sockets(inodes, 4096), n = 0;
	static const char *const files[] = {"/proc/self/net/tcp", "/proc/self/net/tcp6"};
	for(int f = 0; f < 2 && n < max; f++){
		FILE *fp = fopen(files[f], "r");
		if(!fp) continue;
		char line[512];
		if(!fgets(line, sizeof line, fp)){ fclose(fp); continue; }
		while(n < max && fgets(line, sizeof line, fp)){
			char local[64], remote[64], st[8];
			unsigned long ino = 0;
			/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
			if(sscanf(line, " %*s %63s %63s %7s %*s %*s %*s %*s %*s %lu", local, remote, st, &ino) != 4) continue;
			if(strcmp(st, "0A") != 0) continue;
			bool mine = false;
			for(size_t i = 0; i < ni; i++) if(inodes[i] == ino) mine = true;
			if(!mine) continue;
			char *colon = strchr(local, ':');
			if(!colon) continue;
			unsigned port = (unsigned)strtoul(colon + 1, NULL, 16);
			memset(&out[n], 0, sizeof out[n]);
			if(f == 0){
				struct sockaddr_in *sin = (struct sockaddr_in *)&out[n].ss;
				unsigned long a = strtoul(local, NULL, 16); /* host-order bytes of a network-order word */
				sin->sin_family = AF_INET;
				sin->sin_port = htons((uint16_t)port);
				sin->sin_addr.s_addr = (uint32_t)a;
				if(sin->sin_addr.s_addr == htonl(INADDR_ANY)) sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
				out[n].len = sizeof *sin;
			}else{
				struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[n].ss;
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons((uint16_t)port);
				sin6->sin6_addr = in6addr_loopback;
				out[n].len = sizeof *sin6;
			}
			n++;
		}
		fclose(fp);
	}
	return n;
}

static void drop(struct chat_wake *w)
{
	if(w->fd >= 0) close(w->fd);
	w->fd = -1;
	atomic_store(&w->connected, false);
	atomic_store(&w->pending, false);
}

static void connect_now(struct chat_wake *w)
{
	struct cand c[16];
	size_t n = 0;
	if(strcmp(w->mode, "auto") == 0){
		n = listeners(c, 16);
	}else{
		char host[256];
		const char *colon = strrchr(w->mode, ':');
		snprintf(host, sizeof host, "%.*s", (int)(colon - w->mode), w->mode);
		memset(&c[0], 0, sizeof c[0]);
		struct sockaddr_in *sin = (struct sockaddr_in *)&c[0].ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c[0].ss;
		uint16_t port = (uint16_t)atoi(colon + 1);
		if(inet_pton(AF_INET, host, &sin->sin_addr) == 1){
			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
			c[0].len = sizeof *sin;
			n = 1;
		}else if(inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1){
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(port);
			c[0].len = sizeof *sin6;
			n = 1;
		}else if(strcmp(host, "localhost") == 0){
			sin->sin_family = AF_INET;
			sin->sin_port = htons(port);
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			c[0].len = sizeof *sin;
			n = 1;
		}
	}
	for(size_t i = 0; i < n; i++){
		int fd = try_connect(w, (struct sockaddr *)&c[i].ss, c[i].len);
		if(fd >= 0){
			w->fd = fd;
			w->last_io_ns = chat_mono_ns();
			w->backoff_ms = 200;
			atomic_store(&w->connected, true);
			return;
		}
	}
}

static void drain(struct chat_wake *w)
{
	unsigned char buf[256];
	for(;;){
		ssize_t r = recv(w->fd, buf, sizeof buf, MSG_DONTWAIT);
		if(r > 0) continue;
		if(r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) drop(w);
		return;
	}
}

static const unsigned char PINGREQ[2] = {0xC0, 0x00};

void chat_wake__poke(struct chat_wake *w)
{
	if(!w || w->fd < 0) return;
	if(atomic_exchange(&w->pending, true)) return; /* the tick has not run yet */
	drain(w);
	if(w->fd < 0) return;
	if(send(w->fd, PINGREQ, 2, MSG_NOSIGNAL | MSG_DONTWAIT) != 2){
		if(errno != EAGAIN && errno != EWOULDBLOCK) drop(w);
		else atomic_store(&w->pending, false);
	}
	w->last_io_ns = chat_mono_ns();
}

void chat_wake__service(struct chat_wake *w)
{
	if(!w || strcmp(w->mode, "off") == 0) return;
	int64_t now = chat_mono_ns();
	if(w->fd < 0){
		if(now < w->next_try_ns) return;
		connect_now(w);
		if(w->fd < 0){
			w->next_try_ns = now + (int64_t)w->backoff_ms * 1000000;
			if(w->backoff_ms < 10000) w->backoff_ms *= 2;
		}
		return;
	}
	drain(w);
	if(w->fd >= 0 && now - w->last_io_ns > 20LL * 1000000000){
		/* keepalive is 60 s: ping well inside it */
		if(send(w->fd, PINGREQ, 2, MSG_NOSIGNAL | MSG_DONTWAIT) != 2 && errno != EAGAIN) drop(w);
		w->last_io_ns = now;
	}
}

void chat_wake__consumed(struct chat_wake *w)
{
	if(w) atomic_store(&w->pending, false);
}

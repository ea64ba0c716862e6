/* SPDX-License-Identifier: EPL-2.0
 * connect_bench.c: sequential authenticated MQTT connects against one
 * broker, to show that authentication costs the broker thread no database
 * round trip and no slow hash. Each iteration: CONNECT with username and
 * password, wait for CONNACK, DISCONNECT. Prints connects/s and latency
 * percentiles; run it against the chat plugin and a plain Mosquitto with a
 * password_file in the same run (see run.sh).
 *
 *   connect_bench HOST PORT USER PASSWORD COUNT [CLIENTID_PREFIX]
 */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connack_rc = -1;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	(void)m;
	(void)ud;
	connack_rc = rc;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if(argc < 6){
		fprintf(stderr, "usage: %s HOST PORT USER PASSWORD COUNT [CLIENTID_PREFIX]\n", argv[0]);
		return 2;
	}
	const char *host = argv[1], *user = argv[3], *pw = argv[4];
	int port = atoi(argv[2]), count = atoi(argv[5]);
	const char *prefix = argc > 6 ? argv[6] : user;
	if(count <= 0) return 2;
	double *lat = calloc((size_t)count, sizeof *lat);
	if(!lat) return 1;
	mosquitto_lib_init();
	int ok = 0, refused = 0;
	double t0 = now_s();
	for(int i = 0; i < count; i++){
		char id[160];
		snprintf(id, sizeof id, "%s:d%d", prefix, i % 50);
		struct mosquitto *m = mosquitto_new(id, true, NULL);
		if(!m) return 1;
		mosquitto_username_pw_set(m, user, pw);
		mosquitto_connect_callback_set(m, on_connect);
		connack_rc = -1;
		double a = now_s();
		if(mosquitto_connect(m, host, port, 30) != MOSQ_ERR_SUCCESS){
			refused++;
			mosquitto_destroy(m);
			continue;
		}
		while(connack_rc < 0){
			if(mosquitto_loop(m, 1000, 1) != MOSQ_ERR_SUCCESS) break;
		}
		lat[ok] = now_s() - a;
		if(connack_rc == 0) ok++;
		else refused++;
		mosquitto_disconnect(m);
		mosquitto_loop(m, 10, 1);
		mosquitto_destroy(m);
	}
	double el = now_s() - t0;
	qsort(lat, (size_t)ok, sizeof *lat, cmp);
	printf("connects=%d refused=%d elapsed=%.3fs rate=%.0f/s p50=%.3fms p99=%.3fms max=%.3fms\n", ok, refused, el,
			ok / el, ok ? lat[ok / 2] * 1e3 : 0, ok ? lat[(int)(ok * 0.99)] * 1e3 : 0, ok ? lat[ok - 1] * 1e3 : 0);
	free(lat);
	mosquitto_lib_cleanup();
	return refused ? 1 : 0;
}

/* SPDX-License-Identifier: EPL-2.0
 * metrics.c: chat-rest's own Prometheus series. Workers bump lock-free
 * atomic counters when a response is queued; GET /metrics renders them
 * (routes.c appends the plugin's counters from the plugin_stats table).
 * Labels are fixed sets (route names, status codes), so a client can
 * never create new series with odd URLs.
 */
#include "rest.h"

#include <stdio.h>

static const char *const ROUTE_NAMES[CHAT_R__COUNT] = {
	[CHAT_R_LOGIN] = "login",
	[CHAT_R_INBOX] = "inbox",
	[CHAT_R_CONVERSATIONS] = "conversations",
	[CHAT_R_CONV_MESSAGES] = "conversation_messages",
	[CHAT_R_GROUP_MESSAGES] = "group_messages",
	[CHAT_R_PRESENCE] = "presence",
	[CHAT_R_HEALTHZ] = "healthz",
	[CHAT_R_METRICS] = "metrics",
	[CHAT_R_UNMATCHED] = "unmatched",
};

/* The statuses chat-rest answers with; anything else counts as "other". */
static const unsigned STATUSES[CHAT_METRIC_STATUSES] = {
	200, 400, 401, 403, 404, 405, 413, 429, 500, 503, 0, 0,
};

/* Upper bounds in seconds; the +Inf bucket is implicit. */
static const double BUCKETS[CHAT_METRIC_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

const char *chat_metrics__route_name(enum chat_route r)
{
	return (unsigned)r < CHAT_R__COUNT ? ROUTE_NAMES[r] : "unmatched";
}

static int status_index(unsigned status)
{
	for(int i = 0; i < CHAT_METRIC_STATUSES - 2; i++){
		if(STATUSES[i] == status) return i;
	}
	return CHAT_METRIC_STATUSES - 1;
}

void chat_metrics__observe(struct chat_metrics *m, enum chat_route r, unsigned status,
		int64_t elapsed_ns)
{
	if((unsigned)r >= CHAT_R__COUNT) r = CHAT_R_UNMATCHED;
	if(elapsed_ns < 0) elapsed_ns = 0;
	atomic_fetch_add(&m->requests[r][status_index(status)], 1);
	double s = (double)elapsed_ns / 1e9;
	for(int b = 0; b < CHAT_METRIC_BUCKETS; b++){
		if(s <= BUCKETS[b]){
			atomic_fetch_add(&m->buckets[r][b], 1);
			break;
		}
	}
	atomic_fetch_add(&m->count[r], 1);
	atomic_fetch_add(&m->sum_ns[r], (uint_fast64_t)elapsed_ns);
}

int chat_metrics__render(struct chat_metrics *m, struct chat_buf *o)
{
	int rc = 0;
	rc |= chat_buf_puts(o, "# HELP chat_rest_requests_total HTTP requests answered, by route and status.\n"
			"# TYPE chat_rest_requests_total counter\n");
	for(int r = 0; r < CHAT_R__COUNT; r++){
		for(int i = 0; i < CHAT_METRIC_STATUSES; i++){
			uint64_t v = atomic_load(&m->requests[r][i]);
			if(!v) continue;
			if(i == CHAT_METRIC_STATUSES - 1){
				rc |= chat_buf_printf(o, "chat_rest_requests_total{route=\"%s\",status=\"other\"} %llu\n",
						ROUTE_NAMES[r], (unsigned long long)v);
			}else{
				rc |= chat_buf_printf(o, "chat_rest_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
						ROUTE_NAMES[r], STATUSES[i], (unsigned long long)v);
			}
		}
	}
	rc |= chat_buf_puts(o, "# HELP chat_rest_request_duration_seconds Time from request headers to response, by route.\n"
			"# TYPE chat_rest_request_duration_seconds histogram\n");
	for(int r = 0; r < CHAT_R__COUNT; r++){
		uint64_t cum = 0;
		for(int b = 0; b < CHAT_METRIC_BUCKETS; b++){
			cum += atomic_load(&m->buckets[r][b]);
			rc |= chat_buf_printf(o, "chat_rest_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
					ROUTE_NAMES[r], BUCKETS[b], (unsigned long long)cum);
		}
		uint64_t count = atomic_load(&m->count[r]);
		rc |= chat_buf_printf(o, "chat_rest_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
				ROUTE_NAMES[r], (unsigned long long)count);
		rc |= chat_buf_printf(o, "chat_rest_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
				ROUTE_NAMES[r], (double)atomic_load(&m->sum_ns[r]) / 1e9);
		rc |= chat_buf_printf(o, "chat_rest_request_duration_seconds_count{route=\"%s\"} %llu\n",
				ROUTE_NAMES[r], (unsigned long long)count);
	}
	rc |= chat_buf_printf(o, "# HELP chat_rest_db_errors_total Failed database connections and statements.\n"
			"# TYPE chat_rest_db_errors_total counter\n"
			"chat_rest_db_errors_total %llu\n",
			(unsigned long long)atomic_load(&m->db_errors));
	rc |= chat_buf_printf(o, "# HELP chat_rest_db_up Whether the last database round trip worked.\n"
			"# TYPE chat_rest_db_up gauge\n"
			"chat_rest_db_up %d\n", atomic_load(&m->db_up) ? 1 : 0);
	return rc ? -1 : 0;
}

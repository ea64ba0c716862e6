/* SPDX-License-Identifier: EPL-2.0
 * ids.h: validation of user ids, group ids, device ids and client ids.
 * Every id that reaches a topic, a SQL parameter or a log line has passed
 * through here first: 1 to 64 characters of [A-Za-z0-9._-].
 */
#ifndef CHAT_IDS_H
#define CHAT_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define CHAT_ID_MAX 64

/* True when s is 1..64 characters of [A-Za-z0-9._-]. */
bool chat_id_valid(const char *s);
/* Same check on a counted string (not NUL-terminated). */
bool chat_id_validn(const char *s, size_t len);

/* A client id of a logged-in user must be "{user}" or "{user}:{device}".
 * Returns true when clientid is one of those for user. */
bool chat_clientid_for_user(const char *clientid, const char *user);

/* The user part of a client id, if the client id has the user shape
 * ("{id}" or "{id}:{device}" with both parts valid): copies it into out
 * (CHAT_ID_MAX+1 bytes) and returns true. */
bool chat_clientid_user(const char *clientid, char out[CHAT_ID_MAX + 1]);

#endif

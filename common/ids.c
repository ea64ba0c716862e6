/* SPDX-License-Identifier: EPL-2.0
 * ids.c: the one definition of a valid id. Kept free of locale and of
 * <ctype.h> so that "valid" means the same bytes everywhere.
 */
#include "ids.h"

#include <string.h>

static bool id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		|| c == '.' || c == '_' || c == '-';
}

bool chat_id_validn(const char *s, size_t len)
{
	if(!s || len == 0 || len > CHAT_ID_MAX) return false;
	for(size_t i = 0; i < len; i++){
		if(!id_char((unsigned char)s[i])) return false;
	}
	return true;
}

bool chat_id_valid(const char *s)
{
	if(!s) return false;
	size_t len = strnlen(s, CHAT_ID_MAX + 1);
	return chat_id_validn(s, len);
}

bool chat_clientid_for_user(const char *clientid, const char *user)
{
	if(!clientid || !user) return false;
	size_t ulen = strlen(user);
	if(strncmp(clientid, user, ulen) != 0) return false;
	if(clientid[ulen] == '\0') return true;
	if(clientid[ulen] != ':') return false;
	return chat_id_valid(clientid + ulen + 1);
}

bool chat_clientid_user(const char *clientid, char out[CHAT_ID_MAX + 1])
{
	if(!clientid) return false;
	const char *colon = strchr(clientid, ':');
	size_t ulen = colon ? (size_t)(colon - clientid) : strlen(clientid);
	if(!chat_id_validn(clientid, ulen)) return false;
	if(colon && !chat_id_valid(colon + 1)) return false;
	memcpy(out, clientid, ulen);
	out[ulen] = '\0';
	return true;
}

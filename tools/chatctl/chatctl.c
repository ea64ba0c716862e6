/* SPDX-License-Identifier: EPL-2.0
 * chatctl.c: the admin tool's entry point: global options, where the
 * database and the token secret come from, `init`, and the helpers the
 * command files share (errors, parameterised SQL, transactions with retry
 * on deadlock, argument parsing, password input).
 *
 * Settings resolution (first match wins):
 *   database: --db, $CHAT_DB, the libpq PG* environment (when PGHOST,
 *             PGDATABASE or PGSERVICE is set), `db` in the defaults file,
 *             else libpq's own defaults;
 *   secret:   --token-secret-file, $CHAT_TOKEN_SECRET_FILE,
 *             `token_secret_file` in the defaults file.
 * The defaults file is $CHAT_CONFIG (must be readable when set) or the
 * compiled-in CHAT_DEFAULTS_FILE (skipped when it does not exist).
 */
#include "chatctl.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "ids.h"
#include "pg.h"
#include "util.h"

const char chat_ctl__usage_text[] =
	"usage: chatctl [GLOBAL OPTIONS] COMMAND [ARGS]\n"
	"\n"
	"Global options (before the command):\n"
	"  --db CONNINFO             libpq connection string or URI (else $CHAT_DB, the\n"
	"                            PG* environment, `db` in the defaults file)\n"
	"  --token-secret-file FILE  token secret (else $CHAT_TOKEN_SECRET_FILE,\n"
	"                            `token_secret_file` in the defaults file)\n"
	"  --schema-dir DIR          migrations directory (default " CHAT_SCHEMA_DIR ")\n"
	"  --iterations N            PBKDF2 iterations for new password hashes\n"
	"                            (default 210000, at least 1000)\n"
	"  -h, --help                this text\n"
	"  --version                 print the version\n"
	"\n"
	"Commands:\n"
	"  init [--partitions N]          create or migrate the schema (idempotent);\n"
	"                                 N hash partitions (1..1024, default 64) on\n"
	"                                 first creation only\n"
	"  user add NAME                  new user; password on stdin (first line)\n"
	"  user passwd NAME               new password on stdin (first line)\n"
	"  user del NAME                  delete a user, their inbox and their memberships\n"
	"  user list                      all user ids\n"
	"  group create GID --owner NAME  new group; the owner is its first member\n"
	"  group add GID NAME             add a member\n"
	"  group remove GID NAME          remove a member\n"
	"  group del GID                  delete a group\n"
	"  group list [NAME]              all groups, or the groups NAME belongs to\n"
	"  token NAME [--ttl SECONDS]     print a token for NAME (default 86400 s)\n"
	"\n"
	"Ids are 1 to 64 characters of [A-Za-z0-9._-]; put `--` before an id that\n"
	"starts with '-'. On a terminal the password is prompted for, without echo.\n"
	"Exit status: 0 success, 1 failure, 2 usage error.\n"
	"Environment: CHAT_DB, CHAT_TOKEN_SECRET_FILE, CHAT_CONFIG (defaults file,\n"
	"default " CHAT_DEFAULTS_FILE "), PG*.\n";

/* ---- errors ------------------------------------------------------------ */

static int vset_err(struct chat_ctl *c, int rc, const char *fmt, va_list ap)
{
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	return rc;
}

int chat_ctl__fail(struct chat_ctl *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vset_err(c, CHAT_CTL_FAIL, fmt, ap);
	va_end(ap);
	return rc;
}

int chat_ctl__usage(struct chat_ctl *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vset_err(c, CHAT_CTL_USAGE, fmt, ap);
	va_end(ap);
	return rc;
}

const char *chat_ctl__shown(const char *s, char *out, size_t outlen)
{
	static const char hx[] = "0123456789abcdef";
	size_t o = 0, shown = 0;
	if(outlen < 16){
		if(outlen) out[0] = '\0';
		return out;
	}
	for(const unsigned char *p = (const unsigned char *)s; *p; p++){
		if(shown == 72 || o + 8 >= outlen){
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if(*p >= 0x20 && *p < 0x7f){
			out[o++] = (char)*p;
		}else{
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hx[*p >> 4];
			out[o++] = hx[*p & 15];
		}
		shown++;
	}
	out[o] = '\0';
	return out;
}

int chat_ctl__check_id(struct chat_ctl *c, const char *what, const char *id)
{
	if(chat_id_valid(id)) return CHAT_CTL_OK;
	char shown[CHAT_CTL_SHOWN_MAX];
	return chat_ctl__fail(c, "invalid %s id \"%s\": ids are 1 to 64 characters of [A-Za-z0-9._-]",
			what, chat_ctl__shown(id, shown, sizeof shown));
}

/* Print the error as one line, whatever a library put into it. */
static void print_err(const char *msg)
{
	char line[CHAT_CTL_ERR_MAX];
	size_t o = 0;
	for(const char *p = msg; *p && o + 1 < sizeof line; p++){
		unsigned char ch = (unsigned char)*p;
		if(ch == '\n' || ch == '\r' || ch == '\t'){
			if(o && line[o - 1] != ' ') line[o++] = ' ';
		}else if(ch < 0x20 || ch == 0x7f){
			line[o++] = '?';
		}else{
			line[o++] = (char)ch;
		}
	}
	while(o && line[o - 1] == ' ') o--;
	line[o] = '\0';
	fprintf(stderr, "chatctl: %s\n", o ? line : "failed");
}

/* ---- settings ---------------------------------------------------------- */

static int load_defaults(struct chat_ctl *c)
{
	if(c->defaults_tried) return CHAT_CTL_OK;
	c->defaults_tried = true;
	const char *env = getenv("CHAT_CONFIG");
	bool explicit_path = env && *env;
	const char *path = explicit_path ? env : CHAT_DEFAULTS_FILE;
	int bad = 0;
	errno = 0;
	int rc = chat_conf_load(&c->defaults, path, &bad);
	int e = errno;
	if(rc == -1){
		if(!explicit_path && (e == ENOENT || e == ENOTDIR)) return CHAT_CTL_OK;
		return chat_ctl__fail(c, "cannot read defaults file %s: %s", path, strerror(e ? e : EIO));
	}
	if(rc == -2) return chat_ctl__fail(c, "%s:%d: expected \"key = value\"", path, bad);
	c->defaults_ok = true;
	c->defaults_path = path;
	return CHAT_CTL_OK;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return (v && *v) ? v : NULL;
}

/* Warnings from the server are worth a line; NOTICEs ("relation already
 * exists, skipping" on every re-run of init) are not. */
static void notice_cb(void *arg, const PGresult *r)
{
	(void)arg;
	const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	if(sev && msg && strcmp(sev, "WARNING") == 0){
		char line[CHAT_CTL_ERR_MAX];
		snprintf(line, sizeof line, "warning: server: %s", msg);
		print_err(line);
	}
}

int chat_ctl__connect(struct chat_ctl *c)
{
	const char *conninfo = NULL;
	if(c->db) return CHAT_CTL_OK;
	if(c->db_opt){
		conninfo = c->db_opt;
	}else if((conninfo = env_nonempty("CHAT_DB"))){
		/* taken */
	}else if(env_nonempty("PGHOST") || env_nonempty("PGDATABASE") || env_nonempty("PGSERVICE")){
		conninfo = "";
	}else{
		int rc = load_defaults(c);
		if(rc) return rc;
		conninfo = c->defaults_ok ? chat_conf_get(&c->defaults, "db") : NULL;
		if(!conninfo) conninfo = "";
	}
	char err[512];
	c->db = chat_pg_connect(conninfo, err, sizeof err);
	if(!c->db) return chat_ctl__fail(c, "cannot connect to the database: %s", err);
	PQsetNoticeReceiver(c->db, notice_cb, NULL);
	return CHAT_CTL_OK;
}

int chat_ctl__load_secret(struct chat_ctl *c, bool required)
{
	const char *path = c->secret_opt;
	if(!path) path = env_nonempty("CHAT_TOKEN_SECRET_FILE");
	if(path){
		c->secret_path = strdup(path);
	}else{
		int rc = load_defaults(c);
		if(rc) return rc;
		const char *v = c->defaults_ok ? chat_conf_get(&c->defaults, "token_secret_file") : NULL;
		if(v && *v){
			/* a relative path in the defaults file is relative to that file */
			const char *slash = strrchr(c->defaults_path, '/');
			if(v[0] == '/' || !slash){
				c->secret_path = strdup(v);
			}else{
				size_t dl = (size_t)(slash - c->defaults_path) + 1, vl = strlen(v);
				c->secret_path = malloc(dl + vl + 1);
				if(c->secret_path){
					memcpy(c->secret_path, c->defaults_path, dl);
					memcpy(c->secret_path + dl, v, vl + 1);
				}
			}
		}else{
			if(required)
				return chat_ctl__fail(c, "no token secret: use --token-secret-file FILE, "
						"CHAT_TOKEN_SECRET_FILE or token_secret_file in the defaults file");
			return CHAT_CTL_OK;
		}
	}
	if(!c->secret_path) return chat_ctl__fail(c, "out of memory");
	c->secret = malloc(sizeof *c->secret);
	if(!c->secret) return chat_ctl__fail(c, "out of memory");
	char err[512];
	if(chat_secret_load(c->secret, c->secret_path, err, sizeof err)){
		OPENSSL_cleanse(c->secret, sizeof *c->secret);
		free(c->secret);
		c->secret = NULL;
		return chat_ctl__fail(c, "%s", err);
	}
	return CHAT_CTL_OK;
}

/* ---- SQL --------------------------------------------------------------- */

PGresult *chat_ctl__exec(struct chat_ctl *c, const char *sql, int n, const char *const *vals,
		ExecStatusType want)
{
	c->sqlstate[0] = '\0';
	PGresult *r = PQexecParams(c->db, sql, n, NULL, vals, NULL, NULL, 0);
	if(r && PQresultStatus(r) == want) return r;
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	if(state) snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state);
	if(state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0)) c->retry = true;
	if(msg){
		chat_ctl__fail(c, "database error: %s", msg);
	}else if(r && PQresultStatus(r) != PGRES_FATAL_ERROR && PQresultStatus(r) != PGRES_NONFATAL_ERROR){
		chat_ctl__fail(c, "database error: unexpected result %s", PQresStatus(PQresultStatus(r)));
	}else{
		chat_ctl__fail(c, "database error: %s", PQerrorMessage(c->db));
	}
	PQclear(r);
	return NULL;
}

int chat_ctl__cmd(struct chat_ctl *c, const char *sql, int n, const char *const *vals)
{
	PGresult *r = chat_ctl__exec(c, sql, n, vals, PGRES_COMMAND_OK);
	if(!r) return CHAT_CTL_FAIL;
	PQclear(r);
	return CHAT_CTL_OK;
}

int chat_ctl__cmd_one(struct chat_ctl *c, const char *sql, int n, const char *const *vals)
{
	PGresult *r = chat_ctl__exec(c, sql, n, vals, PGRES_COMMAND_OK);
	if(!r) return -1;
	int one = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	return one;
}

int chat_ctl__tx(struct chat_ctl *c, chat_ctl_tx_fn fn, void *arg)
{
	enum { ATTEMPTS = 5 };
	int rc = CHAT_CTL_FAIL;
	for(int attempt = 0; attempt < ATTEMPTS; attempt++){
		c->retry = false;
		rc = chat_ctl__cmd(c, "BEGIN", 0, NULL);
		if(rc) return rc;
		rc = fn(c, arg);
		if(rc == CHAT_CTL_OK){
			/* a failed COMMIT has rolled back already */
			rc = chat_ctl__cmd(c, "COMMIT", 0, NULL);
			if(rc == CHAT_CTL_OK) return rc;
		}else{
			PQclear(PQexec(c->db, "ROLLBACK"));
		}
		if(!c->retry || PQstatus(c->db) != CONNECTION_OK) return rc;
		usleep((useconds_t)(20000 * (attempt + 1)));
	}
	return rc;
}

/* ---- arguments --------------------------------------------------------- */

static bool is_help(const char *a)
{
	return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

int chat_ctl__args(struct chat_ctl *c, int argc, char **argv, const struct chat_ctl_opt *opts,
		const char **pos, int minpos, int maxpos, int *npos)
{
	bool options = true;
	*npos = 0;
	for(int i = 0; i < argc; i++){
		const char *a = argv[i];
		if(options && strcmp(a, "--") == 0){
			options = false;
			continue;
		}
		if(options && a[0] == '-' && a[1] != '\0'){
			if(is_help(a)) return CHAT_CTL_HELP;
			const struct chat_ctl_opt *o = opts;
			size_t nl = strcspn(a, "=");
			for(; o && o->name; o++){
				if(strlen(o->name) == nl && strncmp(a, o->name, nl) == 0) break;
			}
			char shown[CHAT_CTL_SHOWN_MAX];
			if(!o || !o->name){
				return chat_ctl__usage(c, "unknown option %s (try chatctl --help)",
						chat_ctl__shown(a, shown, sizeof shown));
			}
			if(a[nl] == '='){
				*o->val = a + nl + 1;
			}else if(i + 1 < argc){
				*o->val = argv[++i];
			}else{
				return chat_ctl__usage(c, "option %s needs a value", o->name);
			}
			continue;
		}
		if(*npos >= maxpos){
			char shown[CHAT_CTL_SHOWN_MAX];
			return chat_ctl__usage(c, "unexpected argument \"%s\" (try chatctl --help)",
					chat_ctl__shown(a, shown, sizeof shown));
		}
		pos[(*npos)++] = a;
	}
	if(*npos < minpos) return chat_ctl__usage(c, "missing argument (try chatctl --help)");
	return CHAT_CTL_OK;
}

int chat_ctl__int_opt(struct chat_ctl *c, const char *name, const char *s, long long min,
		long long max, long long *out)
{
	char *end = NULL;
	errno = 0;
	long long v = (s && *s) ? strtoll(s, &end, 10) : 0;
	if(!s || !*s || errno || *end != '\0' || v < min || v > max){
		char shown[CHAT_CTL_SHOWN_MAX];
		return chat_ctl__usage(c, "%s must be an integer from %lld to %lld, not \"%s\"", name, min,
				max, chat_ctl__shown(s ? s : "", shown, sizeof shown));
	}
	*out = v;
	return CHAT_CTL_OK;
}

void chat_ctl__now_ms_str(char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld", (long long)chat_now_ms());
}

/* ---- password input ---------------------------------------------------- */

static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;
static const int tty_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static struct sigaction saved_sa[4];

static void restore_tty_cb(int sig)
{
	if(tio_saved) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int echo_off(void)
{
	struct termios t;
	if(tcgetattr(STDIN_FILENO, &saved_tio)) return -1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = restore_tty_cb;
	sigemptyset(&sa.sa_mask);
	for(size_t i = 0; i < sizeof tty_signals / sizeof tty_signals[0]; i++){
		sigaction(tty_signals[i], &sa, &saved_sa[i]);
	}
	tio_saved = 1;
	t = saved_tio;
	t.c_lflag &= (tcflag_t)~ECHO;
	t.c_lflag |= ECHONL;
	return tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
}

static void echo_restore(void)
{
	if(!tio_saved) return;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	tio_saved = 0;
	for(size_t i = 0; i < sizeof tty_signals / sizeof tty_signals[0]; i++){
		sigaction(tty_signals[i], &saved_sa[i], NULL);
	}
}

/* One line from fd 0, byte by byte: nothing past the first line is
 * consumed and no stdio buffer keeps a copy. 0, or -1 with c->err. */
static int read_line(struct chat_ctl *c, char *buf, size_t buflen)
{
	size_t n = 0;
	bool toolong = false, nul = false;
	for(;;){
		char ch;
		ssize_t got = read(STDIN_FILENO, &ch, 1);
		if(got < 0 && errno == EINTR) continue;
		if(got < 0) return chat_ctl__fail(c, "cannot read the password: %s", strerror(errno));
		if(got == 0 || ch == '\n') break;
		if(ch == '\0') nul = true;
		if(n + 1 < buflen) buf[n++] = ch;
		else toolong = true;
	}
	buf[n] = '\0';
	if(n && buf[n - 1] == '\r') buf[--n] = '\0';
	if(toolong || n > CHAT_CTL_PW_MAX)
		return chat_ctl__fail(c, "password longer than %d bytes", CHAT_CTL_PW_MAX);
	if(nul) return chat_ctl__fail(c, "password contains a NUL byte");
	if(n == 0) return chat_ctl__fail(c, "empty password refused");
	return CHAT_CTL_OK;
}

int chat_ctl__read_password(struct chat_ctl *c, const char *user, char *buf, size_t buflen)
{
	if(!isatty(STDIN_FILENO)) return read_line(c, buf, buflen);

	char again[CHAT_CTL_PW_MAX + 2];
	int rc;
	fprintf(stderr, "Password for %s: ", user);
	fflush(stderr);
	if(echo_off()) return chat_ctl__fail(c, "cannot turn off terminal echo: %s", strerror(errno));
	rc = read_line(c, buf, buflen);
	if(rc == CHAT_CTL_OK){
		fprintf(stderr, "Retype password for %s: ", user);
		fflush(stderr);
		rc = read_line(c, again, sizeof again);
		if(rc == CHAT_CTL_OK && strcmp(buf, again) != 0)
			rc = chat_ctl__fail(c, "passwords do not match");
	}
	echo_restore();
	OPENSSL_cleanse(again, sizeof again);
	return rc;
}

/* ---- init -------------------------------------------------------------- */

static int cmd_init(struct chat_ctl *c, int argc, char **argv)
{
	const char *parts_s = NULL;
	const struct chat_ctl_opt opts[] = {{"--partitions", &parts_s}, {NULL, NULL}};
	const char *pos[1];
	int npos, rc;
	long long parts = 64;
	PGresult *r = NULL;

	rc = chat_ctl__args(c, argc, argv, opts, pos, 0, 0, &npos);
	if(rc) return rc;
	if(parts_s && (rc = chat_ctl__int_opt(c, "--partitions", parts_s, 1, 1024, &parts))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;

	char err[1024];
	int applied = 0;
	if(chat_pg_migrate(c->db, c->schema_dir, (int)parts, err, sizeof err, &applied))
		return chat_ctl__fail(c, "init: %s", err);

	/* The partition count is fixed when 001 first runs: say so when the
	 * operator asked for another one. */
	r = chat_ctl__exec(c, "SELECT value FROM chat_settings WHERE key = 'partitions'", 0, NULL,
			PGRES_TUPLES_OK);
	if(!r) return CHAT_CTL_FAIL;
	if(parts_s && PQntuples(r) == 1 && atoll(PQgetvalue(r, 0, 0)) != parts){
		fprintf(stderr, "chatctl: warning: the schema already has %s partitions; "
				"--partitions %lld ignored\n", PQgetvalue(r, 0, 0), parts);
	}
	PQclear(r);
	printf("schema up to date (%d migration%s applied)\n", applied, applied == 1 ? "" : "s");
	return CHAT_CTL_OK;
}

/* ---- main -------------------------------------------------------------- */

static int global_opt(struct chat_ctl *c, int argc, char **argv, int *i, const char *name,
		const char **val)
{
	const char *a = argv[*i];
	size_t nl = strlen(name);
	if(strncmp(a, name, nl) != 0) return 0;
	if(a[nl] == '='){
		*val = a + nl + 1;
		return 1;
	}
	if(a[nl] != '\0') return 0;
	if(*i + 1 >= argc){
		chat_ctl__usage(c, "option %s needs a value", name);
		return -1;
	}
	*val = argv[++*i];
	return 1;
}

static int run(struct chat_ctl *c, int argc, char **argv)
{
	const char *iter_s = NULL;
	int i = 1;
	for(; i < argc && argv[i][0] == '-'; i++){
		const char *a = argv[i];
		int m;
		if(strcmp(a, "--") == 0){
			i++;
			break;
		}
		if(is_help(a)) return CHAT_CTL_HELP;
		if(strcmp(a, "--version") == 0){
			printf("chatctl (mosquitto-chat) %s\n", CHAT_CTL_VERSION);
			return CHAT_CTL_OK;
		}
		if((m = global_opt(c, argc, argv, &i, "--db", &c->db_opt))
				|| (m = global_opt(c, argc, argv, &i, "--token-secret-file", &c->secret_opt))
				|| (m = global_opt(c, argc, argv, &i, "--schema-dir", &c->schema_dir))
				|| (m = global_opt(c, argc, argv, &i, "--iterations", &iter_s))){
			if(m < 0) return CHAT_CTL_USAGE;
			continue;
		}
		char shown[CHAT_CTL_SHOWN_MAX];
		return chat_ctl__usage(c, "unknown option %s (try chatctl --help)",
				chat_ctl__shown(a, shown, sizeof shown));
	}
	if(iter_s){
		long long it;
		int rc = chat_ctl__int_opt(c, "--iterations", iter_s, 1000, 100000000, &it);
		if(rc) return rc;
		c->iterations = (unsigned)it;
	}
	if(i >= argc) return chat_ctl__usage(c, "no command given (try chatctl --help)");

	const char *cmd = argv[i];
	int sub_argc = argc - i - 1;
	char **sub_argv = argv + i + 1;
	if(strcmp(cmd, "help") == 0) return CHAT_CTL_HELP;
	if(strcmp(cmd, "init") == 0) return cmd_init(c, sub_argc, sub_argv);
	if(strcmp(cmd, "user") == 0) return chat_ctl__cmd_user(c, sub_argc, sub_argv);
	if(strcmp(cmd, "group") == 0) return chat_ctl__cmd_group(c, sub_argc, sub_argv);
	if(strcmp(cmd, "token") == 0) return chat_ctl__cmd_token(c, sub_argc, sub_argv);
	char shown[CHAT_CTL_SHOWN_MAX];
	return chat_ctl__usage(c, "unknown command \"%s\" (try chatctl --help)",
			chat_ctl__shown(cmd, shown, sizeof shown));
}

int main(int argc, char **argv)
{
	struct chat_ctl c;
	memset(&c, 0, sizeof c);
	c.schema_dir = CHAT_SCHEMA_DIR;
	c.iterations = CHAT_PBKDF2_ITER_DEFAULT;

	int rc = run(&c, argc, argv);
	if(rc == CHAT_CTL_HELP){
		fputs(chat_ctl__usage_text, stdout);
		rc = CHAT_CTL_OK;
	}else if(rc != CHAT_CTL_OK){
		print_err(c.err);
	}
	if(fflush(stdout) != 0 && rc == CHAT_CTL_OK){
		print_err("cannot write to standard output");
		rc = CHAT_CTL_FAIL;
	}

	if(c.db) PQfinish(c.db);
	if(c.secret){
		OPENSSL_cleanse(c.secret, sizeof *c.secret);
		free(c.secret);
	}
	free(c.secret_path);
	chat_conf_free(&c.defaults);
	return rc;
}

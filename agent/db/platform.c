/*
 * platform.c - see platform.h. Each call streams the head through its
 * own push parser with SAX callbacks: no tree is built, so memory stays
 * bounded by the bytes read, and the callbacks stop the parser at the
 * root start tag (a cut head) or when the time is up. The parser's error
 * handler keeps this file's first error (message and line) even with
 * other threads parsing at the same time. (libxml2's xmlTextReader was
 * tried first: fed in 512-byte chunks it parses a long start tag again
 * at every chunk, 4 times slower on many attributes.)
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libxml/parser.h>
#include <libxml/SAX2.h>

#include "agent/db/platform.h"
#include "base/util.h"

#define NS_BOOMI	"http://api.platform.boomi.com/"
#define NS_BPMN2	"http://www.omg.org/spec/BPMN/20100524/MODEL"
#define NS_MULE_PREFIX	"http://www.mulesoft.org/schema/mule/"
#define NS_TIBCO_PREFIX	"http://xmlns.tibco.com/bw/"

static const char *
classify(const char *root, const char *ns)
{
	if (strcmp(root, "mule") == 0 &&
	    (ns[0] == '\0' || strncmp(ns, NS_MULE_PREFIX,
	    strlen(NS_MULE_PREFIX)) == 0))
		return "mulesoft";
	if (strcmp(root, "Component") == 0 && strcmp(ns, NS_BOOMI) == 0)
		return "boomi";
	if (strcmp(root, "ProcessDefinition") == 0 &&
	    (ns[0] == '\0' || strncmp(ns, NS_TIBCO_PREFIX,
	    strlen(NS_TIBCO_PREFIX)) == 0))
		return "tibco";
	if (strcmp(root, "definitions") == 0 && strcmp(ns, NS_BPMN2) == 0)
		return "sap";
	return "unknown";
}

/* Copies an error message without its trailing newline. */
static void
copy_message(char *dst, size_t n, const char *msg)
{
	size_t len;

	utf8_snprintf(dst, n, "%s", msg ? msg : "not well-formed");
	len = strlen(dst);
	while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
		dst[--len] = '\0';
}

/* One scan's state, reached from the parser as ctxt->_private. */
struct scan {
	struct platform_info *pi;	/* the result being filled */
	int whole;			/* the head is the whole file */
	int stopped;			/* we stopped the parser on purpose */
	int64_t deadline;		/* time_mono_ms() bound */
};

/* The first error the parser reports: its message and line. */
static void
keep_first_error(void *ctx, xmlErrorPtr err)
{
	xmlParserCtxtPtr ctxt = ctx;
	struct scan *sc = ctxt->_private;

	if (err == NULL || sc->stopped || sc->pi->error[0] != '\0')
		return;
	copy_message(sc->pi->error, sizeof(sc->pi->error), err->message);
	sc->pi->error_line = err->line;
}

/* Called at every node: ends the scan when the time is up. */
static void
check_time(xmlParserCtxtPtr ctxt, struct scan *sc)
{
	if (sc->stopped || time_mono_ms() <= sc->deadline)
		return;
	snprintf(sc->pi->error, sizeof(sc->pi->error), "not read to its "
	    "end within %d ms", PLATFORM_SCAN_MS);
	sc->stopped = 1;
	xmlStopParser(ctxt);
}

static void
on_start(void *ctx, const xmlChar *name, const xmlChar *prefix,
    const xmlChar *uri, int nns, const xmlChar **nss, int nattrs,
    int ndefaulted, const xmlChar **attrs)
{
	xmlParserCtxtPtr ctxt = ctx;
	struct scan *sc = ctxt->_private;
	struct platform_info *pi = sc->pi;

	(void)prefix; (void)nns; (void)nss; (void)nattrs; (void)ndefaulted;
	(void)attrs;
	if (pi->root[0] == '\0' && name != NULL) {
		utf8_snprintf(pi->root, sizeof(pi->root), "%s", name);
		utf8_snprintf(pi->ns, sizeof(pi->ns), "%s",
		    uri ? (const char *)uri : "");
		pi->platform = classify(pi->root, pi->ns);
		if (!sc->whole) {
			/* Of a cut file the root start tag is all we read:
			 * what follows is cut somewhere. */
			sc->stopped = 1;
			xmlStopParser(ctxt);
			return;
		}
	}
	check_time(ctxt, sc);
}

static void
on_end(void *ctx, const xmlChar *name, const xmlChar *prefix,
    const xmlChar *uri)
{
	xmlParserCtxtPtr ctxt = ctx;

	(void)name; (void)prefix; (void)uri;
	check_time(ctxt, ctxt->_private);
}

/* Text, comments and the like are read and dropped: no tree is built. */
static void
on_text(void *ctx, const xmlChar *ch, int len)
{
	xmlParserCtxtPtr ctxt = ctx;

	(void)ch; (void)len;
	check_time(ctxt, ctxt->_private);
}

static void
on_comment(void *ctx, const xmlChar *value)
{
	(void)value;
	on_text(ctx, NULL, 0);
}

static void
on_pi(void *ctx, const xmlChar *target, const xmlChar *data)
{
	(void)target; (void)data;
	on_text(ctx, NULL, 0);
}

static void
on_reference(void *ctx, const xmlChar *name)
{
	(void)name;
	on_text(ctx, NULL, 0);
}

void
platform_detect(const char *head, size_t len, int whole,
    struct platform_info *pi)
{
	struct scan sc = { .pi = pi, .whole = whole,
	    .deadline = time_mono_ms() + PLATFORM_SCAN_MS };
	xmlSAXHandler sax;
	xmlParserCtxtPtr ctxt;

	memset(pi, 0, sizeof(*pi));
	pi->platform = "unknown";
	pi->well_formed = -1;
	if (len > PLATFORM_SCAN_BYTES) {
		len = PLATFORM_SCAN_BYTES;
		sc.whole = whole = 0;
	}
	/* libxml2's SAX2 handlers keep the DTD's declarations (bounded by
	 * the head); ours replace every one that would build the tree. */
	memset(&sax, 0, sizeof(sax));
	xmlSAXVersion(&sax, 2);
	sax.startElementNs = on_start;
	sax.endElementNs = on_end;
	sax.characters = sax.ignorableWhitespace = sax.cdataBlock = on_text;
	sax.comment = on_comment;
	sax.processingInstruction = on_pi;
	sax.reference = on_reference;
	sax.serror = keep_first_error;
	sax.error = sax.warning = NULL;
	ctxt = xmlCreatePushParserCtxt(&sax, NULL, NULL, 0, NULL);
	if (ctxt == NULL)
		return;
	ctxt->_private = &sc;
	/* NONET: never fetch anything; without NOENT and DTDLOAD no entity
	 * is expanded and no external DTD or entity is read. One chunk: the
	 * push parser parses a start tag once it has all of it. */
	xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_NOERROR |
	    XML_PARSE_NOWARNING);
	xmlParseChunk(ctxt, head, (int)len, whole);
	if (sc.stopped) {
		if (whole && pi->root[0] != '\0')
			pi->platform = classify(pi->root, pi->ns);
	} else if (!whole) {
		/* Ran out of head before the root start tag. The error, if
		 * any, may be the cut's own: say so, judge nothing. */
		char msg[sizeof(pi->error)];

		snprintf(msg, sizeof(msg), "%s", pi->error);
		utf8_snprintf(pi->error, sizeof(pi->error), "no root start tag "
		    "in the first %d KiB read%s%s%s", PLATFORM_SCAN_BYTES / 1024,
		    msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
		pi->error_line = 0;
	} else if (ctxt->wellFormed && pi->root[0] != '\0') {
		pi->well_formed = 1;
	} else {
		pi->well_formed = 0;
		pi->platform = "unknown";
		if (pi->error[0] == '\0')
			copy_message(pi->error, sizeof(pi->error), NULL);
	}
	xmlFreeDoc(ctxt->myDoc);
	xmlFreeParserCtxt(ctxt);
}

char *
platform_file_info(const struct platform_info *pi, const char *file,
    long long size)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(o, "file", file);
	cJSON_AddNumberToObject(o, "size", (double)size);
	cJSON_AddStringToObject(o, "platform", pi->platform);
	if (pi->well_formed >= 0)
		cJSON_AddBoolToObject(o, "well_formed", pi->well_formed);
	else
		cJSON_AddNumberToObject(o, "inspected_bytes",
		    PLATFORM_SCAN_BYTES);
	if (pi->root[0] != '\0')
		cJSON_AddStringToObject(o, "root_element", pi->root);
	if (pi->ns[0] != '\0')
		cJSON_AddStringToObject(o, "namespace", pi->ns);
	if (pi->error[0] != '\0')
		cJSON_AddStringToObject(o, "error", pi->error);
	if (pi->error_line > 0)
		cJSON_AddNumberToObject(o, "error_line", pi->error_line);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL)
		abort();
	return s;
}

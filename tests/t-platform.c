/*
 * t-platform.c - proves platform detection on the shared sample files of
 * each platform (MuleSoft, Boomi, TIBCO, SAP iFlow), that a malformed file
 * is reported with the parser's line, and that a hostile document (an
 * external entity, a billion laughs) is neither fetched nor expanded.
 * Hostile shapes are bounded: many attributes on one element (libxml2
 * checks them in time growing with their square: a 1.1 MB file took 39 s
 * before detection read only 64 KiB), a flood of elements (561 MB peak
 * before), deep nesting; names cut into their buffers stay valid UTF-8.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <libxml/parser.h>

#include "agent/db/platform.h"
#include "base/keymap.h"
#include "base/util.h"
#include "tap.h"

static char *
slurp(const char *name, size_t *len)
{
	const char *srcdir = getenv("srcdir");
	char path[4096];
	struct buf b = {0};
	char chunk[4096];
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/data/%s", srcdir ? srcdir : "tests",
	    name);
	f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	*len = b.len;
	return buf_take(&b);
}

static void
sample(const char *file, const char *platform, const char *root)
{
	struct platform_info pi;
	size_t len = 0;
	char *xml = slurp(file, &len);

	if (!tap_ok(xml != NULL, "read %s", file))
		return;
	platform_detect(xml, len, 1, &pi);
	tap_str(pi.platform, platform, "%s is %s", file, platform);
	tap_ok(pi.well_formed && strcmp(pi.root, root) == 0,
	    "%s: well-formed, root <%s>", file, root);
	free(xml);
}

static double
seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long
peak_kib(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* Runs detection as the database leg does (the file's head, at most
 * PLATFORM_SCAN_BYTES) and reports how long it took. */
static double
timed(const char *xml, size_t len, struct platform_info *pi)
{
	size_t head = len < PLATFORM_SCAN_BYTES ? len : PLATFORM_SCAN_BYTES;
	double t0 = seconds();

	platform_detect(xml, head, head == len, pi);
	return seconds() - t0;
}

/* A root start tag with attributes a0="v" a1="v" ... filling size bytes. */
static char *
many_attributes(size_t size, int close, size_t *len)
{
	struct buf b = {0};
	int i;

	buf_puts(&b, "<?xml version=\"1.0\"?><mule xmlns="
	    "\"http://www.mulesoft.org/schema/mule/core\"");
	for (i = 0; b.len < size; i++)
		buf_printf(&b, " a%d=\"v\"", i);
	if (close)
		buf_puts(&b, "/>");
	*len = b.len;
	return buf_take(&b);
}

static void
hostile(void)
{
	struct platform_info pi;
	struct buf b = {0};
	size_t len, i;
	char *x, *info;
	double t;
	long before;

	x = many_attributes(1100000, 1, &len);
	t = timed(x, len, &pi);
	tap_ok(t < 1.0, "1.1 MB of attributes on the root: %.3f s (39 s "
	    "before the bound)", t);
	tap_ok(strcmp(pi.platform, "unknown") == 0 && pi.well_formed == -1 &&
	    strstr(pi.error, "first 64 KiB") != NULL,
	    "a root start tag longer than the bound: unknown, not judged (%s)",
	    pi.error);
	free(x);
	x = many_attributes(PLATFORM_SCAN_BYTES - 64, 1, &len);
	t = timed(x, len, &pi);
	tap_ok(t < 0.5 && strcmp(pi.platform, "mulesoft") == 0 &&
	    pi.well_formed == 1, "the most attributes that fit in 64 KiB: "
	    "%.3f s, still classified", t);
	free(x);

	buf_puts(&b, "<mule xmlns=\"http://www.mulesoft.org/schema/mule/core\">");
	while (b.len < 16u << 20)
		buf_puts(&b, "<a/><a/><a/><a/><a/><a/><a/><a/>");
	buf_puts(&b, "</mule>");
	len = b.len;
	x = buf_take(&b);
	before = peak_kib();
	t = timed(x, len, &pi);
	tap_ok(t < 0.5 && peak_kib() - before < 8192,
	    "16 MiB of <a/>: %.3f s, peak memory +%ld KiB (561 MB before)", t,
	    peak_kib() - before);
	tap_ok(strcmp(pi.platform, "mulesoft") == 0 && pi.well_formed == -1,
	    "a file larger than the bound: classified by its root, "
	    "well-formedness not claimed");
	info = platform_file_info(&pi, "flood.xml", (long long)len);
	tap_ok(strstr(info, "\"well_formed\"") == NULL &&
	    strstr(info, "\"inspected_bytes\":65536") != NULL,
	    "its file_info says how much was read: %s", info);
	free(info);
	x[PLATFORM_SCAN_BYTES - 7] = '\0';	/* a flood within the bound */
	t = timed(x, strlen(x), &pi);
	tap_ok(t < 0.5 && pi.well_formed == 0, "a cut flood read whole: "
	    "%.3f s, not well-formed (%s)", t, pi.error);
	free(x);

	for (i = 0; i < 1000; i++)
		buf_puts(&b, "<d>");
	for (i = 0; i < 1000; i++)
		buf_puts(&b, "</d>");
	x = buf_take(&b);
	t = timed(x, strlen(x), &pi);
	tap_ok(t < 0.5 && strcmp(pi.root, "d") == 0, "1,000-level nesting: "
	    "%.3f s (%s)", t, pi.well_formed ? "well-formed" : pi.error);
	free(x);

	/* Entities in an attribute of the root: libxml2 checks their
	 * expansion even without NOENT; its amplification limit stops it. */
	buf_puts(&b, "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">");
	for (i = 1; i < 10; i++) {
		buf_printf(&b, "<!ENTITY %c \"", (int)('a' + i));
		for (int k = 0; k < 16; k++)
			buf_printf(&b, "&%c;", (int)('a' + i - 1));
		buf_puts(&b, "\">");
	}
	buf_puts(&b, "]><l x=\"&j;\">&j;</l>");
	x = buf_take(&b);
	before = peak_kib();
	t = timed(x, strlen(x), &pi);
	tap_ok(t < 0.5 && peak_kib() - before < 8192, "a billion laughs in "
	    "an attribute: %.3f s, +%ld KiB (%s)", t, peak_kib() - before,
	    pi.error[0] ? pi.error : "no error");
	free(x);
}

/* Names cut into pi's buffers never end inside a character. */
static void
names_cut(void)
{
	struct platform_info pi;
	struct buf b = {0};
	char *x;
	int i;

	buf_puts(&b, "<");
	for (i = 0; i < 200; i++)
		buf_puts(&b, "\xc3\xa9");	/* é, two bytes */
	buf_puts(&b, " xmlns=\"urn:");
	for (i = 0; i < 300; i++)
		buf_puts(&b, "\xe2\x82\xac");	/* €, three bytes */
	buf_puts(&b, "\"/>");
	x = buf_take(&b);
	platform_detect(x, strlen(x), 1, &pi);
	tap_ok(strlen(pi.root) > 100 &&
	    keymap_utf8_valid(pi.root, strlen(pi.root)),
	    "a 400-byte root name cut to %zu bytes is valid UTF-8",
	    strlen(pi.root));
	tap_ok(strlen(pi.ns) > 200 && keymap_utf8_valid(pi.ns, strlen(pi.ns)),
	    "a 904-byte namespace cut to %zu bytes is valid UTF-8",
	    strlen(pi.ns));
	free(x);
}

int
main(void)
{
	struct platform_info pi;
	size_t len = 0;
	char *xml, *info;
	const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE mule [<!ENTITY x "
	    "SYSTEM \"file:///etc/passwd\">]><mule xmlns=\"http://www.mulesoft"
	    ".org/schema/mule/core\">&x;</mule>";
	const char *laughs = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a "
	    "\"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
	    "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\"><!ENTITY d \"&c;&c;"
	    "&c;&c;&c;&c;&c;&c;&c;&c;\">]><l>&d;&d;&d;&d;</l>";

	xmlInitParser();
	sample("mulesoft-orders.xml", "mulesoft", "mule");
	sample("boomi-invoice.xml", "boomi", "Component");
	sample("tibco-shipment.process", "tibco", "ProcessDefinition");
	sample("sap-customer.iflw", "sap", "definitions");

	xml = slurp("malformed.xml", &len);
	platform_detect(xml, len, 1, &pi);
	tap_str(pi.platform, "unknown", "a malformed file is of unknown platform");
	tap_int(pi.well_formed, 0, "and not well-formed");
	tap_ok(pi.error_line >= 4 && pi.error[0] != '\0',
	    "the parser's error and line are kept (line %d: %s)",
	    pi.error_line, pi.error);
	info = platform_file_info(&pi, "malformed.xml", (long long)len);
	tap_ok(strstr(info, "\"well_formed\":false") != NULL &&
	    strstr(info, "\"error_line\":") != NULL,
	    "file_info says not well-formed, with the line");
	free(info);
	free(xml);

	platform_detect("<definitions xmlns=\"urn:other\"/>", 33, 1, &pi);
	tap_str(pi.platform, "unknown", "a root name alone is not enough");
	platform_detect("<bns:Component xmlns:bns=\"http://api.platform.boomi.com/\"/>",
	    59, 1, &pi);
	tap_str(pi.platform, "boomi", "namespace prefixes do not matter");
	platform_detect("{\"json\": true}", 14, 1, &pi);
	tap_ok(!pi.well_formed && strcmp(pi.platform, "unknown") == 0,
	    "JSON is not XML");
	platform_detect(xxe, strlen(xxe), 1, &pi);
	tap_str(pi.platform, "mulesoft", "a document with an external entity "
	    "is still classified");
	platform_detect(laughs, strlen(laughs), 1, &pi);
	tap_ok(strcmp(pi.platform, "unknown") == 0,
	    "entity bombs are parsed without expanding them");
	hostile();
	names_cut();
	xmlCleanupParser();
	return tap_done();
}

/*
 * t-platform.c - proves platform detection on the shared sample files of
 * each platform (MuleSoft, Boomi, TIBCO, SAP iFlow), that a malformed file
 * is reported with the parser's line, and that a hostile document (an
 * external entity, a billion laughs) is neither fetched nor expanded.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "agent/db/platform.h"
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
	platform_detect(xml, len, &pi);
	tap_str(pi.platform, platform, "%s is %s", file, platform);
	tap_ok(pi.well_formed && strcmp(pi.root, root) == 0,
	    "%s: well-formed, root <%s>", file, root);
	free(xml);
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
	platform_detect(xml, len, &pi);
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

	platform_detect("<definitions xmlns=\"urn:other\"/>", 33, &pi);
	tap_str(pi.platform, "unknown", "a root name alone is not enough");
	platform_detect("<bns:Component xmlns:bns=\"http://api.platform.boomi.com/\"/>",
	    59, &pi);
	tap_str(pi.platform, "boomi", "namespace prefixes do not matter");
	platform_detect("{\"json\": true}", 14, &pi);
	tap_ok(!pi.well_formed && strcmp(pi.platform, "unknown") == 0,
	    "JSON is not XML");
	platform_detect(xxe, strlen(xxe), &pi);
	tap_str(pi.platform, "mulesoft", "a document with an external entity "
	    "is still classified");
	platform_detect(laughs, strlen(laughs), &pi);
	tap_ok(strcmp(pi.platform, "unknown") == 0,
	    "entity bombs are parsed without expanding them");
	xmlCleanupParser();
	return tap_done();
}

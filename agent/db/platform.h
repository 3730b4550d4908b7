/*
 * platform.h - which integration platform an uploaded XML file comes
 * from, read from its root element and namespace with libxml2's
 * streaming reader (no network, no DTD loading, no entity expansion):
 *
 *   mulesoft  <mule> (MuleSoft's core namespace)
 *   boomi     <Component> in http://api.platform.boomi.com/
 *   tibco     <ProcessDefinition> (TIBCO BusinessWorks)
 *   sap       BPMN2 <definitions> (an SAP Integration Suite iFlow)
 *   unknown   anything else, and files that are not well-formed XML
 *
 * Uploads are hostile, so the work is bounded whatever the file: only
 * its first PLATFORM_SCAN_BYTES are read, and the reader stops after
 * PLATFORM_SCAN_MS. A file that fits in the bound is read to its end
 * (node by node, nothing kept) to say whether it is well-formed; of a
 * larger one only the prolog and the root start tag are read, and
 * well-formedness is not claimed either way.
 *
 * The result also describes the file for jobs.file_info. Pure.
 */
#ifndef OUTBOXD_PLATFORM_H
#define OUTBOXD_PLATFORM_H

#include <stddef.h>

/* The most of a file that is read (its head). 64 KiB holds the root
 * start tag of every real integration file; a larger root start tag is
 * not one, and costs libxml2 time that grows with the square of its
 * attributes (measured here: as many as fit in 64 KiB take 0.05 s;
 * 1.1 MB of them took 39 s when the whole file was parsed). */
#define PLATFORM_SCAN_BYTES (64 * 1024)
/* Time allowed to the reader, checked between nodes. */
#define PLATFORM_SCAN_MS 500

struct platform_info {
	const char *platform;	/* a static string from the list above */
	int well_formed;	/* 1 well-formed, 0 not, -1 not known (the
				   file is larger than the bound) */
	char root[128];		/* root element's local name, "" if none */
	char ns[256];		/* its namespace URI, "" if none */
	char error[256];	/* the parser's first error, "" when none */
	int error_line;		/* its line, 0 when none */
};

/*
 * Examines head, the first len bytes of an XML file (at most
 * PLATFORM_SCAN_BYTES of them are read); whole is 1 when head is the
 * whole file. Thread-safe once xmlInitParser ran.
 */
void platform_detect(const char *head, size_t len, int whole,
    struct platform_info *pi);

/* jobs.file_info for a file: a JSON object text; the caller frees it. */
char *platform_file_info(const struct platform_info *pi, const char *file,
    long long size);

#endif

/*
 * platform.h - which integration platform an uploaded XML file comes
 * from, read from its root element and namespace with libxml2 (no network,
 * no entity expansion, a size cap):
 *
 *   mulesoft  <mule> (MuleSoft's core namespace)
 *   boomi     <Component> in http://api.platform.boomi.com/
 *   tibco     <ProcessDefinition> (TIBCO BusinessWorks)
 *   sap       BPMN2 <definitions> (an SAP Integration Suite iFlow)
 *   unknown   anything else, and files that are not well-formed XML
 *
 * The result also describes the file for jobs.file_info. Pure.
 */
#ifndef OUTBOXD_PLATFORM_H
#define OUTBOXD_PLATFORM_H

#include <stddef.h>

/* Files larger than this are not parsed (their platform is unknown). */
#define PLATFORM_MAX_BYTES (16 * 1024 * 1024)

struct platform_info {
	const char *platform;	/* a static string from the list above */
	int well_formed;	/* 1 when libxml2 parsed it without error */
	char root[128];		/* root element's local name, "" if none */
	char ns[256];		/* its namespace URI, "" if none */
	char error[256];	/* the parser's first error, "" when none */
	int error_line;		/* its line, 0 when none */
};

/* Examines len bytes of XML. Thread-safe once xmlInitParser ran. */
void platform_detect(const char *xml, size_t len, struct platform_info *pi);

/* jobs.file_info for a file: a JSON object text; the caller frees it. */
char *platform_file_info(const struct platform_info *pi, const char *file,
    long long size);

#endif

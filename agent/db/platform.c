/*
 * platform.c - see platform.h. Parsing goes through a private parser
 * context so the error (message and line) of a malformed file is this
 * file's, even with other threads parsing at the same time.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

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

	snprintf(dst, n, "%s", msg ? msg : "not well-formed");
	len = strlen(dst);
	while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
		dst[--len] = '\0';
}

void
platform_detect(const char *xml, size_t len, struct platform_info *pi)
{
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	const xmlNode *root;

	memset(pi, 0, sizeof(*pi));
	pi->platform = "unknown";
	if (len > PLATFORM_MAX_BYTES) {
		snprintf(pi->error, sizeof(pi->error), "larger than %d MiB: "
		    "not parsed", PLATFORM_MAX_BYTES / (1024 * 1024));
		return;
	}
	ctxt = xmlNewParserCtxt();
	if (ctxt == NULL)
		return;
	/* NONET: never fetch a DTD; no NOENT: entities are not expanded. */
	doc = xmlCtxtReadMemory(ctxt, xml, (int)len, "upload.xml", NULL,
	    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (doc == NULL || !ctxt->wellFormed) {
		const xmlError *err = xmlCtxtGetLastError(ctxt);

		copy_message(pi->error, sizeof(pi->error),
		    err ? err->message : NULL);
		pi->error_line = err ? err->line : 0;
		xmlFreeDoc(doc);
		xmlFreeParserCtxt(ctxt);
		return;
	}
	pi->well_formed = 1;
	root = xmlDocGetRootElement(doc);
	if (root != NULL) {
		snprintf(pi->root, sizeof(pi->root), "%s",
		    (const char *)root->name);
		if (root->ns != NULL && root->ns->href != NULL)
			snprintf(pi->ns, sizeof(pi->ns), "%s",
			    (const char *)root->ns->href);
		pi->platform = classify(pi->root, pi->ns);
	}
	xmlFreeDoc(doc);
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
	cJSON_AddBoolToObject(o, "well_formed", pi->well_formed);
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

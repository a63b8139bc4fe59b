/* The C ABI's tests: every documented error code on the input that causes
 * it, then messages over shm: and udp:// checked one by one, by offer and by
 * claim-in-place; the raw rings (SPSC, broadcast, MPSC: their streams,
 * their errors, a foreign file); application counters read back from the
 * node's counters file. Run by crates/weft-ffi/tests/run.sh (from scripts/test):
 *   basic DIR     DIR: an empty directory of this user's, mode 0700
 */
#include "weft.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " (last error: \"%s\")\n", weft_last_error());    \
            failures++;                                                       \
            return;                                                           \
        }                                                                     \
    } while (0)

#define EXPECT_CODE(call, want)                                               \
    do {                                                                      \
        int rc_ = (call);                                                     \
        CHECK(rc_ == (want), "%s returned %d (%s), expected %s", #call, rc_,   \
              weft_status_name(rc_), #want);                                  \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char dir[512];
static weft_node *node;

/* What a poll callback saw. */
struct seen {
    uint64_t next;      /* the next message's expected sequence number */
    uint64_t messages;
    int sessions;
    int losses;
    int bad;            /* messages out of order or with wrong contents */
    size_t size;        /* expected length of each message */
};

static void fill(uint8_t *m, size_t size, uint64_t seq) {
    memcpy(m, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < size; i++) m[i] = (uint8_t)(seq + i);
}

static void on_event(void *ctx, const weft_event *ev) {
    struct seen *s = ctx;
    switch (ev->kind) {
    case WEFT_EVENT_MESSAGE: {
        uint8_t want[4096];
        fill(want, s->size, s->next);
        if (ev->len != s->size || memcmp(ev->data, want, s->size) != 0) s->bad++;
        s->next++;
        s->messages++;
        break;
    }
    case WEFT_EVENT_NEW_SESSION: s->sessions++; break;
    case WEFT_EVENT_LOSS: s->losses++; break;
    default: break;
    }
}

static void null_arguments(void) {
    weft_node *n = (weft_node *)1;
    EXPECT_CODE(weft_node_new(NULL, NULL), WEFT_ERR_NULL);
    EXPECT_CODE(weft_publication_new(NULL, "shm:x", 1, (weft_publication **)&n), WEFT_ERR_NULL);
    CHECK(n == NULL, "*out is NULL after a failure");
    EXPECT_CODE(weft_publication_offer(NULL, (const uint8_t *)"x", 1), WEFT_ERR_NULL);
    EXPECT_CODE(weft_subscription_poll(NULL, 1, on_event, NULL), WEFT_ERR_NULL);
    CHECK(strstr(weft_last_error(), "subscription is NULL") != NULL, "message names the argument");
    /* Freeing NULL is a no-op, as free(3). */
    weft_publication_free(NULL);
    weft_subscription_free(NULL);
    EXPECT_CODE(weft_node_close(NULL), WEFT_OK);
}

static void bad_config(void) {
    weft_node *n = NULL;
    EXPECT_CODE(weft_node_new("agents = \"two\"", &n), WEFT_ERR_CONFIG);
    CHECK(n == NULL, "no node");
    CHECK(strstr(weft_last_error(), "agents") != NULL, "message names the key");
    EXPECT_CODE(weft_node_new("no_such_key = 1", &n), WEFT_ERR_CONFIG);
    EXPECT_CODE(weft_node_new("dir = \"\"", &n), WEFT_ERR_CONFIG);
    CHECK(strcmp(weft_status_name(WEFT_ERR_CONFIG), "WEFT_ERR_CONFIG") == 0, "status names");
}

static void bad_uris(void) {
    weft_publication *p = NULL;
    weft_subscription *s = NULL;
    EXPECT_CODE(weft_publication_new(node, "udp://239.1.2.3:x", 1, &p), WEFT_ERR_URI);
    CHECK(strlen(weft_last_error()) > 0, "a message");
    EXPECT_CODE(weft_publication_new(node, "tcp://host:1", 1, &p), WEFT_ERR_URI);
    EXPECT_CODE(weft_subscription_new(node, "shm:", 1, &s), WEFT_ERR_URI);
    EXPECT_CODE(weft_subscription_new(node, "\xff\xfe", 1, &s), WEFT_ERR_INVALID);
    CHECK(p == NULL && s == NULL, "no handles");
}

/* A foreign file where a channel's ring would be: the subscription's poll
 * reports it once, with the documented code, and hands out nothing. */
static void foreign_shm_file(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/foreign.1", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "create %s", path);
    for (int i = 0; i < 8192; i++) fputc(0xAB, f);
    fclose(f);
    weft_subscription *s = NULL;
    EXPECT_CODE(weft_subscription_new(node, "shm:foreign", 1, &s), WEFT_OK);
    struct seen seen = {.size = 8};
    int attach_errors = 0, other = 0;
    double until = now_s() + 0.3;
    while (now_s() < until) {
        int rc = weft_subscription_poll(s, 16, on_event, &seen);
        if (rc == WEFT_ERR_ATTACH) {
            attach_errors++;
            CHECK(strstr(weft_last_error(), "not a weft shared-memory region") != NULL,
                  "says what is wrong: %s", weft_last_error());
        } else if (rc != 0) {
            other++;
        }
        usleep(200);
    }
    weft_subscription_free(s);
    unlink(path);
    CHECK(attach_errors == 1, "reported once, not %d times", attach_errors);
    CHECK(other == 0 && seen.messages == 0 && seen.sessions == 0, "nothing else");
}

/* What a ring poll callback saw: frames numbered 0, 1, 2 … per producer
 * (the producer's index in the type id), each `size` bytes of fill(). */
struct frames {
    uint64_t next[4];
    uint64_t count;
    int bad;
    size_t size;
};

static void on_frame(void *ctx, uint32_t type_id, const uint8_t *data, size_t len) {
    struct frames *f = ctx;
    uint8_t want[4096];
    if (type_id >= 4 || len != f->size) {
        f->bad++;
        return;
    }
    fill(want, f->size, f->next[type_id]);
    if (memcmp(data, want, len) != 0) f->bad++;
    f->next[type_id]++;
    f->count++;
}

/* Streams `count` frames from `p` (as producer `id`) to each consumer,
 * alternating offer and claim-in-place; every consumer gets every frame. */
static void ring_stream(weft_ring_producer *p, uint32_t id, weft_ring_consumer **cs, int n,
                        struct frames *fs, uint64_t count) {
    uint8_t msg[4096];
    size_t size = fs[0].size;
    uint64_t sent = 0;
    double until = now_s() + 30;
    while (sent < count || 1) {
        int all = 1;
        for (int i = 0; i < n; i++) {
            int rc = weft_ring_poll(cs[i], 64, on_frame, &fs[i]);
            CHECK(rc >= 0, "poll: %s", weft_status_name(rc));
            all &= fs[i].next[id] == count;
        }
        if (all) break;
        CHECK(now_s() < until, "timed out: %llu of %llu sent", (unsigned long long)sent,
              (unsigned long long)count);
        if (sent == count) continue;
        fill(msg, size, sent);
        int rc;
        if (sent % 2 == 0) {
            rc = weft_ring_offer(p, id, msg, size);
        } else {
            uint8_t *at = NULL;
            rc = weft_ring_try_claim(p, size, id, &at);
            if (rc == WEFT_OK) {
                memcpy(at, msg, size);
                EXPECT_CODE(weft_ring_commit(p), WEFT_OK);
            }
        }
        if (rc == WEFT_OK) sent++;
        else CHECK(rc == WEFT_ERR_FULL, "offer: %s", weft_status_name(rc));
    }
    for (int i = 0; i < n; i++) CHECK(fs[i].bad == 0, "consumer %d: %d bad frames", i, fs[i].bad);
}

static void rings(void) {
    weft_ring_config spsc = {.kind = WEFT_RING_SPSC, .capacity = 64 * 1024};
    weft_ring_producer *p = NULL, *p2 = NULL;
    weft_ring_consumer *c = NULL, *c2 = NULL;

    /* SPSC: the producer creates, the consumer attaches. */
    EXPECT_CODE(weft_ring_producer_create(dir, "c-spsc", &spsc, &p), WEFT_OK);
    EXPECT_CODE(weft_ring_producer_create(dir, "c-spsc", &spsc, &p2), WEFT_ERR_SHM);
    CHECK(p2 == NULL && strstr(weft_last_error(), "exists") != NULL, "a second create: %s", weft_last_error());
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-spsc", WEFT_RING_SPSC, &c), WEFT_OK);
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-spsc", WEFT_RING_SPSC, &c2), WEFT_ERR_SHM);
    CHECK(c2 == NULL, "the consumer's role is taken");
    struct frames f = {.size = 100};
    ring_stream(p, 1, &c, 1, &f, 50000);
    uint8_t big[10000] = {0}; /* more than the default maximum, capacity / 8 */
    EXPECT_CODE(weft_ring_offer(p, 1, big, sizeof big), WEFT_ERR_TOO_LARGE);
    EXPECT_CODE(weft_ring_offer(p, 0xFFFFFF00u, big, 8), WEFT_ERR_RESERVED_TYPE);
    uint8_t *at = NULL;
    EXPECT_CODE(weft_ring_try_claim(p, 8, 1, &at), WEFT_OK);
    EXPECT_CODE(weft_ring_offer(p, 1, big, 8), WEFT_ERR_INVALID);
    EXPECT_CODE(weft_ring_abort(p), WEFT_OK);
    EXPECT_CODE(weft_ring_abort(p), WEFT_ERR_INVALID);
    EXPECT_CODE(weft_ring_producer_state(c, 5000000000ull), WEFT_PEER_LIVE);
    /* Full: nobody reads, so the ring fills and says so. */
    int full = 0;
    for (int i = 0; i < 10000 && !full; i++) full = weft_ring_offer(p, 1, big, 100) == WEFT_ERR_FULL;
    CHECK(full, "a ring nobody reads fills up");
    weft_ring_producer_free(p);
    int rc;
    while ((rc = weft_ring_poll(c, 64, on_frame, &f)) > 0) {}
    EXPECT_CODE(rc, WEFT_ERR_CLOSED);
    EXPECT_CODE(weft_ring_producer_state(c, 0), WEFT_PEER_CLOSED);
    weft_ring_consumer_free(c);

    /* Who creates which kind. */
    weft_ring_config mpsc = {.kind = WEFT_RING_MPSC, .capacity = 64 * 1024, .max_peers = 2};
    EXPECT_CODE(weft_ring_producer_create(dir, "c-wrong", &mpsc, &p), WEFT_ERR_INVALID);
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-wrong", WEFT_RING_MPSC, &c), WEFT_ERR_INVALID);
    weft_ring_config bad = {.kind = WEFT_RING_SPSC, .capacity = 1000};
    EXPECT_CODE(weft_ring_producer_create(dir, "c-bad", &bad, &p), WEFT_ERR_SHM);
    CHECK(strstr(weft_last_error(), "power of two") != NULL, "says why: %s", weft_last_error());
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-missing", WEFT_RING_SPSC, &c), WEFT_ERR_SHM);
    EXPECT_CODE(weft_ring_consumer_attach(dir, NULL, WEFT_RING_SPSC, &c), WEFT_ERR_NULL);

    /* A foreign file where a ring should be, and a ring of another kind. */
    char path[600];
    snprintf(path, sizeof path, "%s/c-foreign", dir);
    FILE *ff = fopen(path, "wb");
    CHECK(ff != NULL, "create %s", path);
    for (int i = 0; i < 8192; i++) fputc(0xAB, ff);
    fclose(ff);
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-foreign", WEFT_RING_SPSC, &c), WEFT_ERR_SHM);
    CHECK(c == NULL && strstr(weft_last_error(), "not a weft shared-memory region") != NULL,
          "a foreign file: %s", weft_last_error());
    unlink(path);

    /* MPSC: the consumer creates, two producers attach; each in order. */
    EXPECT_CODE(weft_ring_consumer_create(dir, "c-mpsc", &mpsc, &c), WEFT_OK);
    EXPECT_CODE(weft_ring_producer_attach(dir, "c-mpsc", WEFT_RING_MPSC, &p), WEFT_OK);
    EXPECT_CODE(weft_ring_producer_attach(dir, "c-mpsc", WEFT_RING_MPSC, &p2), WEFT_OK);
    weft_ring_producer *px = NULL;
    EXPECT_CODE(weft_ring_producer_attach(dir, "c-mpsc", WEFT_RING_SPSC, &px), WEFT_ERR_SHM);
    CHECK(strstr(weft_last_error(), "holds a mpsc ring, not a spsc ring") != NULL,
          "says it is another kind: %s", weft_last_error());
    struct frames fm = {.size = 40};
    ring_stream(p, 1, &c, 1, &fm, 20000);
    ring_stream(p2, 2, &c, 1, &fm, 20000);
    EXPECT_CODE(weft_ring_producer_state(c, 0), WEFT_ERR_INVALID);
    weft_ring_producer_free(p);
    weft_ring_producer_free(p2);
    weft_ring_consumer_free(c);

    /* Reliable broadcast: the producer creates, two consumers join; each
     * gets everything. */
    weft_ring_config bc = {.kind = WEFT_RING_BROADCAST, .capacity = 64 * 1024, .max_peers = 4};
    EXPECT_CODE(weft_ring_producer_create(dir, "c-bc", &bc, &p), WEFT_OK);
    EXPECT_CODE(weft_ring_offer(p, 1, big, 8), WEFT_ERR_NOT_CONNECTED);
    weft_ring_consumer *cs[2] = {NULL, NULL};
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-bc", WEFT_RING_BROADCAST, &cs[0]), WEFT_OK);
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-bc", WEFT_RING_BROADCAST, &cs[1]), WEFT_OK);
    struct frames fb[2] = {{.size = 64}, {.size = 64}};
    ring_stream(p, 3, cs, 2, fb, 20000);
    uint64_t from = 1, to = 1;
    EXPECT_CODE(weft_ring_rejoin(cs[0], &from, &to), WEFT_OK);
    CHECK(from == to, "a live consumer skips nothing on rejoin: %llu..%llu",
          (unsigned long long)from, (unsigned long long)to);
    weft_ring_producer_free(p);
    for (int i = 0; i < 2; i++) {
        while ((rc = weft_ring_poll(cs[i], 64, on_frame, &fb[i])) > 0) {}
        EXPECT_CODE(rc, WEFT_ERR_CLOSED);
        weft_ring_consumer_free(cs[i]);
    }

    /* Overwrite broadcast: a consumer that does not keep up is told how
     * much it missed, and carries on. */
    weft_ring_config ow = {.kind = WEFT_RING_BROADCAST_OVERWRITE, .capacity = 4096, .max_peers = 1};
    EXPECT_CODE(weft_ring_producer_create(dir, "c-ow", &ow, &p), WEFT_OK);
    EXPECT_CODE(weft_ring_consumer_attach(dir, "c-ow", WEFT_RING_BROADCAST_OVERWRITE, &c), WEFT_OK);
    for (int i = 0; i < 1000; i++) EXPECT_CODE(weft_ring_offer(p, 0, big, 64), WEFT_OK);
    struct frames fo = {.size = 64};
    EXPECT_CODE(weft_ring_poll(c, 64, on_frame, &fo), WEFT_ERR_LAPPED);
    CHECK(weft_ring_lapped(c) > 0 && strstr(weft_last_error(), "missed") != NULL,
          "lapped by %llu: %s", (unsigned long long)weft_ring_lapped(c), weft_last_error());
    weft_ring_producer_free(p);
    weft_ring_consumer_free(c);
}

struct found {
    const char *label;
    uint64_t value;
    int hits;
};

static void on_counter(void *ctx, const weft_counter_value *v) {
    struct found *f = ctx;
    if (strcmp(v->label, f->label) == 0) {
        f->value = v->value;
        f->hits++;
        if (strcmp(v->type_name, "app_counter") != 0 && strcmp(v->type_name, "app_gauge") != 0) f->hits += 100;
    }
}

static void counters(void) {
    weft_counter *c = NULL, *g = NULL, *x = (weft_counter *)1;
    EXPECT_CODE(weft_counter_new(node, "c-basic orders", WEFT_COUNTER_TOTAL, &c), WEFT_OK);
    EXPECT_CODE(weft_counter_new(node, "c-basic depth", WEFT_COUNTER_GAUGE, &g), WEFT_OK);
    EXPECT_CODE(weft_counter_new(node, "", WEFT_COUNTER_TOTAL, &x), WEFT_ERR_CONFIG);
    EXPECT_CODE(weft_counter_new(node, "x", 7, &x), WEFT_ERR_INVALID);
    CHECK(x == NULL, "no handle on failure");
    weft_counter_add(c, 3);
    weft_counter_add(c, 4);
    weft_counter_set(g, 42);
    CHECK(weft_counter_get(c) == 7 && weft_counter_get(g) == 42, "values");
    struct found f = {.label = "c-basic orders"};
    int n = weft_node_counters(node, on_counter, &f);
    CHECK(n > 2, "the node's counters: %d", n);
    CHECK(f.hits == 1 && f.value == 7, "the counter in the file: %d hits, value %llu", f.hits,
          (unsigned long long)f.value);
    struct found fg = {.label = "c-basic depth"};
    weft_node_counters(node, on_counter, &fg);
    CHECK(fg.hits == 1 && fg.value == 42, "the gauge in the file");
    weft_counter_free(c);
    weft_counter_free(g);
    struct found gone = {.label = "c-basic orders"};
    weft_node_counters(node, on_counter, &gone);
    CHECK(gone.hits == 0, "a freed counter is gone");
    /* Gateways: bad URIs get the URI error, in either place. */
    weft_gateway *gw = (weft_gateway *)1;
    EXPECT_CODE(weft_gateway_in_new(node, "shm:x", "shm:y", 1, &gw), WEFT_ERR_CONFIG);
    CHECK(gw == NULL, "no handle on failure");
    EXPECT_CODE(weft_gateway_in_new(node, "udp://239.1.2.3:4000", "bogus:y", 1, &gw), WEFT_ERR_URI);
    EXPECT_CODE(weft_gateway_out_new(node, "shm:x", NULL, 1, &gw), WEFT_ERR_NULL);
}

/* Sends `count` messages of `size` bytes on `uri`, half by offer and half by
 * claim, and checks each arrives once, in order, intact. */
static void stream(const char *uri, uint64_t count, size_t size) {
    weft_subscription *s = NULL;
    weft_publication *p = NULL;
    EXPECT_CODE(weft_subscription_new(node, uri, 7, &s), WEFT_OK);
    EXPECT_CODE(weft_publication_new(node, uri, 7, &p), WEFT_OK);
    CHECK(weft_publication_max_message(p) >= size, "room for %zu bytes", size);
    struct seen seen = {.size = size};
    uint8_t msg[4096];
    uint64_t sent = 0;
    double deadline = now_s() + 30;
    while (seen.messages < count) {
        CHECK(now_s() < deadline, "%s: %llu of %llu arrived", uri,
              (unsigned long long)seen.messages, (unsigned long long)count);
        if (sent < count) {
            int rc;
            if (sent % 2 == 0) {
                fill(msg, size, sent);
                rc = weft_publication_offer(p, msg, size);
            } else {
                uint8_t *at = NULL;
                rc = weft_publication_try_claim(p, size, &at);
                if (rc == WEFT_OK) {
                    CHECK(at != NULL, "a claim has room");
                    /* One claim at a time; nothing else while it is open. */
                    uint8_t *again = (uint8_t *)1;
                    EXPECT_CODE(weft_publication_try_claim(p, size, &again), WEFT_ERR_INVALID);
                    CHECK(again == NULL, "no second claim");
                    EXPECT_CODE(weft_publication_offer(p, msg, size), WEFT_ERR_INVALID);
                    fill(at, size, sent);
                    rc = weft_claim_commit(p);
                }
            }
            if (rc == WEFT_OK) {
                sent++;
            } else {
                CHECK(rc == WEFT_ERR_BACK_PRESSURED || rc == WEFT_ERR_NOT_CONNECTED,
                      "offer: %s", weft_status_name(rc));
            }
        }
        weft_node_do_work(node);
        int n = weft_subscription_poll(s, 64, on_event, &seen);
        CHECK(n >= 0, "poll: %s", weft_status_name(n));
    }
    CHECK(seen.bad == 0, "%s: %d messages out of order or altered", uri, seen.bad);
    CHECK(seen.losses == 0, "%s: no loss", uri);
    CHECK(seen.sessions == 1, "%s: one session, saw %d", uri, seen.sessions);
    /* An abandoned claim is never seen; the next message is. */
    uint8_t *at = NULL;
    while (weft_publication_try_claim(p, size, &at) != WEFT_OK) weft_node_do_work(node);
    memset(at, 0xEE, size);
    EXPECT_CODE(weft_claim_abort(p), WEFT_OK);
    EXPECT_CODE(weft_claim_abort(p), WEFT_ERR_INVALID);
    EXPECT_CODE(weft_claim_commit(p), WEFT_ERR_INVALID);
    fill(msg, size, count);
    while (weft_publication_offer(p, msg, size) != WEFT_OK) weft_node_do_work(node);
    while (seen.messages < count + 1) {
        CHECK(now_s() < deadline, "%s: the message after the abandoned claim", uri);
        weft_node_do_work(node);
        CHECK(weft_subscription_poll(s, 64, on_event, &seen) >= 0, "poll");
    }
    CHECK(seen.bad == 0, "%s: the abandoned claim was not delivered", uri);
    /* Too large is refused and says the limit. */
    size_t max = weft_publication_max_message(p);
    uint8_t *big = calloc(max + 1, 1);
    EXPECT_CODE(weft_publication_offer(p, big, max + 1), WEFT_ERR_TOO_LARGE);
    CHECK(strstr(weft_last_error(), "larger than") != NULL, "%s", weft_last_error());
    free(big);
    weft_publication_free(p);
    weft_subscription_free(s);
}

/* A multicast group on loopback with a port nobody holds. */
static void udp_uri(char *out, size_t n) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("udp port");
        exit(1);
    }
    unsigned port = ntohs(a.sin_port);
    close(fd);
    snprintf(out, n, "udp://239.77.52.%u:%u", port % 200 + 1, port);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: basic DIR\n");
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    null_arguments();
    bad_config();
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "dir = \"%s\"\nthreading = \"invoker\"\nshm_capacity = \"64KiB\"\n", dir);
    int rc = weft_node_new(cfg, &node);
    if (rc != WEFT_OK) {
        fprintf(stderr, "FAIL: weft_node_new: %s: %s\n", weft_status_name(rc), weft_last_error());
        return 1;
    }
    bad_uris();
    foreign_shm_file();
    rings();
    counters();
    stream("shm:c-basic", 20000, 64);
    stream("shm:c-basic-large", 2000, 3000);
    char uri[128];
    udp_uri(uri, sizeof uri);
    stream(uri, 5000, 200);
    rc = weft_node_close(node);
    if (rc != WEFT_OK) {
        fprintf(stderr, "FAIL: weft_node_close: %s: %s\n", weft_status_name(rc), weft_last_error());
        failures++;
    }
    if (failures) {
        fprintf(stderr, "basic: %d failure(s)\n", failures);
        return 1;
    }
    printf("basic: all C ABI checks passed\n");
    return 0;
}

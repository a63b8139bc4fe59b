/*
 * ZeroMQ over epgm (PGM in UDP, OpenPGM inside libzmq) round trip, for
 * comparison with weft's udp-pingpong. Not part of the Rust build: no
 * maintained Rust binding of libzmq exists (the `zmq` crate's last release
 * is from 2022), so this is a small standalone C program, built and run by
 * `benches/zmq-epgm/run` inside a network namespace of its own.
 *
 *   zmq_epgm_pingpong IFACE GROUP_PING GROUP_PONG PORT ROUNDS WARMUP BYTES
 *
 * Forks an echo process; both pin themselves (CPUs 0 and 1), both busy-poll
 * with ZMQ_DONTWAIT as weft-bench's pingpong scenarios do. Prints one JSON
 * line with the round trip's percentiles in ns.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static void die(const char *what) {
    fprintf(stderr, "zmq_epgm_pingpong: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A PUB socket on `group` and a SUB socket on `other`, PGM rate 1 Gbit/s. */
static void open_pair(void *ctx, const char *iface, const char *group, const char *other,
                      const char *port, void **pub, void **sub) {
    char ep[256];
    int rate = 1000000; /* kbit/s; the default, 100 kbit/s, throttles */
    int recovery = 1000; /* ms of history kept for repairs */
    *pub = zmq_socket(ctx, ZMQ_PUB);
    *sub = zmq_socket(ctx, ZMQ_SUB);
    if (!*pub || !*sub) die("socket");
    if (zmq_setsockopt(*pub, ZMQ_RATE, &rate, sizeof rate)) die("ZMQ_RATE");
    if (zmq_setsockopt(*sub, ZMQ_RATE, &rate, sizeof rate)) die("ZMQ_RATE");
    if (zmq_setsockopt(*pub, ZMQ_RECOVERY_IVL, &recovery, sizeof recovery)) die("ZMQ_RECOVERY_IVL");
    if (zmq_setsockopt(*sub, ZMQ_SUBSCRIBE, "", 0)) die("ZMQ_SUBSCRIBE");
    snprintf(ep, sizeof ep, "epgm://%s;%s:%s", iface, other, port);
    if (zmq_connect(*sub, ep)) die(ep);
    snprintf(ep, sizeof ep, "epgm://%s;%s:%s", iface, group, port);
    if (zmq_connect(*pub, ep)) die(ep);
}

static int recv_spin(void *sub, char *buf, size_t len) {
    for (;;) {
        int n = zmq_recv(sub, buf, len, ZMQ_DONTWAIT);
        if (n >= 0) return n;
        if (zmq_errno() != EAGAIN) die("recv");
    }
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s IFACE GROUP_PING GROUP_PONG PORT ROUNDS WARMUP BYTES\n", argv[0]);
        return 2;
    }
    const char *iface = argv[1], *ping = argv[2], *pong = argv[3], *port = argv[4];
    long rounds = atol(argv[5]), warmup = atol(argv[6]);
    size_t bytes = (size_t)atol(argv[7]);
    if (rounds < 1 || warmup < 0 || bytes < 8 || bytes > 65536) {
        fprintf(stderr, "zmq_epgm_pingpong: bad ROUNDS, WARMUP or BYTES\n");
        return 2;
    }
    long total = rounds + warmup;
    pid_t child = fork();
    if (child < 0) return 1;
    void *ctx = zmq_ctx_new();
    void *pub, *sub;
    char *buf = malloc(bytes), *msg = calloc(1, bytes);
    if (child == 0) {
        pin(1);
        open_pair(ctx, iface, pong, ping, port, &pub, &sub);
        for (;;) { /* until the pinging process kills it */
            int n = recv_spin(sub, buf, bytes);
            if (zmq_send(pub, buf, (size_t)n, 0) < 0) die("send");
        }
    }
    pin(0);
    open_pair(ctx, iface, ping, pong, port, &pub, &sub);
    /* PGM has no connection: send until the echo answers (joins take a while). */
    for (int tries = 0;; tries++) {
        if (tries == 20000) {
            fprintf(stderr, "zmq_epgm_pingpong: no echo after 20 s\n");
            kill(child, 9);
            return 1;
        }
        memset(msg, 0xEE, bytes);
        zmq_send(pub, msg, bytes, 0);
        usleep(1000);
        if (zmq_recv(sub, buf, bytes, ZMQ_DONTWAIT) >= 0) break;
    }
    /* Rounds are numbered from 1; late echoes of the join probes (0xEE...)
     * are skipped. */
    uint64_t *rtt = malloc(sizeof(uint64_t) * (size_t)rounds);
    long done = 0;
    for (long i = 0; done < total; i++) {
        uint64_t seq = (uint64_t)i + 1;
        memcpy(msg, &seq, 8);
        uint64_t t0 = now_ns();
        if (zmq_send(pub, msg, bytes, 0) < 0) die("send");
        for (;;) {
            recv_spin(sub, buf, bytes);
            if (memcmp(buf, &seq, 8) == 0) break;
        }
        uint64_t t1 = now_ns();
        if (done >= warmup) rtt[done - warmup] = t1 - t0;
        done++;
    }
    kill(child, 9);
    waitpid(child, NULL, 0);
    qsort(rtt, (size_t)rounds, sizeof(uint64_t), cmp);
#define Q(p) rtt[(size_t)((double)(rounds - 1) * (p))]
    printf("{\"scenario\":\"zmq-epgm-pingpong\",\"msg_bytes\":%zu,\"samples\":%ld,"
           "\"p50_ns\":%lu,\"p90_ns\":%lu,\"p99_ns\":%lu,\"p99_9_ns\":%lu,\"max_ns\":%lu,"
           "\"libzmq\":\"%d.%d.%d\"}\n",
           bytes, rounds, (unsigned long)Q(0.5), (unsigned long)Q(0.9), (unsigned long)Q(0.99),
           (unsigned long)Q(0.999), (unsigned long)rtt[rounds - 1], ZMQ_VERSION_MAJOR,
           ZMQ_VERSION_MINOR, ZMQ_VERSION_PATCH);
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_destroy(ctx);
    return 0;
}

// The C++ wrappers of the raw rings and the counters (weft.hpp): a stream
// through an SPSC ring by offer and by claim, a broadcast ring to two
// consumers, errors as weft::Error with their codes, an exception thrown by
// a poll callback carried out of poll(), and application counters read back.
// Run by crates/weft-ffi/tests/run.sh:   rings DIR   (DIR: empty, mode 0700)
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "weft.hpp"

static int failures = 0;
#define CHECK(cond, what)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #cond, \
                         std::string(what).c_str());                               \
            failures++;                                                            \
        }                                                                          \
    } while (0)

template <class F>
static int error_code(F &&f) {
    try {
        f();
    } catch (const weft::Error &e) {
        return e.code();
    }
    return WEFT_OK;
}

static void spsc(const std::string &dir) {
    weft::RingConfig cfg;
    cfg.kind = weft::RingKind::Spsc;
    cfg.capacity = 64 * 1024;
    auto p = weft::RingProducer::create(dir, "cpp-spsc", cfg);
    auto c = weft::RingConsumer::attach(dir, "cpp-spsc", weft::RingKind::Spsc);
    CHECK(error_code([&] { weft::RingConsumer::attach(dir, "cpp-spsc", weft::RingKind::Spsc); }) == WEFT_ERR_SHM,
          "a second consumer is refused");
    std::uint64_t sent = 0, next = 0;
    const std::uint64_t count = 100000;
    while (next < count) {
        if (sent < count) {
            weft::Status s;
            if (sent % 2 == 0) {
                s = p.offer(7, std::as_bytes(std::span(&sent, 1)));
            } else {
                std::span<std::byte> room;
                s = p.try_claim(sizeof sent, 7, room);
                if (s == weft::Status::Ok) {
                    std::memcpy(room.data(), &sent, sizeof sent);
                    p.commit();
                }
            }
            if (s == weft::Status::Ok) sent++;
            else CHECK(s == weft::Status::Full, weft_status_name(static_cast<int>(s)));
        }
        c.poll([&](std::uint32_t type, std::span<const std::byte> m) {
            std::uint64_t v;
            std::memcpy(&v, m.data(), sizeof v);
            if (type != 7 || m.size() != 8 || v != next) throw std::runtime_error("out of order");
            next++;
        });
    }
    CHECK(p.offer(0xFFFFFF00u, {}) == weft::Status::ReservedType, "reserved type");
    CHECK(c.producer_state(5000000000ull) == WEFT_PEER_LIVE, "the producer is live");
    // An exception from the callback comes out of poll(), after weft returns.
    p.offer(1, {});
    bool thrown = false;
    try {
        c.poll([](std::uint32_t, std::span<const std::byte>) { throw std::logic_error("mine"); });
    } catch (const std::logic_error &e) {
        thrown = std::string(e.what()) == "mine";
    }
    CHECK(thrown, "the callback's exception is rethrown");
    {
        auto gone = std::move(p);  // moved-from p is empty; gone closes the ring
    }
    int code = error_code([&] {
        while (c.poll([](std::uint32_t, std::span<const std::byte>) {}) > 0) {
        }
    });
    CHECK(code == WEFT_ERR_CLOSED, std::string("closed, got ") + weft_status_name(code));
}

static void broadcast(const std::string &dir) {
    weft::RingConfig cfg;
    cfg.kind = weft::RingKind::Broadcast;
    cfg.capacity = 64 * 1024;
    cfg.max_peers = 2;
    auto p = weft::RingProducer::create(dir, "cpp-bc", cfg);
    CHECK(p.offer(1, {}) == weft::Status::NotConnected, "nobody to deliver to");
    auto a = weft::RingConsumer::attach(dir, "cpp-bc", weft::RingKind::Broadcast);
    auto b = weft::RingConsumer::attach(dir, "cpp-bc", weft::RingKind::Broadcast);
    CHECK(error_code([&] { weft::RingConsumer::attach(dir, "cpp-bc", weft::RingKind::Broadcast); }) == WEFT_ERR_SHM,
          "a third consumer finds no slot");
    std::uint64_t got_a = 0, got_b = 0;
    for (std::uint64_t i = 0; i < 1000; i++) {
        while (p.offer(2, std::as_bytes(std::span(&i, 1))) != weft::Status::Ok) {
            a.poll([&](std::uint32_t, std::span<const std::byte>) { got_a++; });
            b.poll([&](std::uint32_t, std::span<const std::byte>) { got_b++; });
        }
    }
    while (a.poll([&](std::uint32_t, std::span<const std::byte>) { got_a++; }) > 0) {
    }
    while (b.poll([&](std::uint32_t, std::span<const std::byte>) { got_b++; }) > 0) {
    }
    CHECK(got_a == 1000 && got_b == 1000, std::to_string(got_a) + " and " + std::to_string(got_b));
    CHECK(error_code([&] { weft::RingProducer::create(dir, "cpp-bad", weft::RingConfig{weft::RingKind::Mpsc}); }) ==
              WEFT_ERR_INVALID,
          "an MPSC ring is created by its consumer");
}

static void counters(const std::string &dir) {
    weft::Node node("threading = \"invoker\"\ndir = \"" + dir + "\"\n");
    weft::Counter orders(node, "cpp orders");
    weft::Counter depth(node, "cpp depth", weft::Counter::Kind::Gauge);
    orders.add(5);
    orders.add();
    depth.set(17);
    std::uint64_t o = 0, d = 0;
    weft::for_each_counter(node, [&](const weft_counter_value &v) {
        if (std::string(v.label) == "cpp orders") o = v.value;
        if (std::string(v.label) == "cpp depth") d = v.value;
    });
    CHECK(o == 6 && d == 17, "read back " + std::to_string(o) + ", " + std::to_string(d));
    CHECK(error_code([&] { weft::Counter(node, ""); }) == WEFT_ERR_CONFIG, "an empty label");
    node.close();
}

int main(int argc, char **argv) try {
    if (argc != 2) {
        std::fprintf(stderr, "usage: rings DIR\n");
        return 2;
    }
    std::string dir = argv[1];
    spsc(dir);
    broadcast(dir);
    counters(dir);
    if (failures) {
        std::fprintf(stderr, "rings: %d failure(s)\n", failures);
        return 1;
    }
    std::printf("rings: all C++ ring and counter checks passed\n");
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "rings: %s\n", e.what());
    return 1;
}

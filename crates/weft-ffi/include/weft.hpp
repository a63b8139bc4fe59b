// weft for C++ (C++20): move-only RAII handles over the C ABI in weft.h:
// Node, Publication, Subscription, Claim, Gateway, Counter, and the raw
// rings RingProducer and RingConsumer.
//
// Error handling, by design:
//  - setting up (a node, a publication, a subscription) and faults (a foreign
//    or corrupt shared-memory file, a panic inside weft) throw weft::Error,
//    which carries the C code and message;
//  - flow on the message path never throws: offer and claim return a
//    weft::Status (BackPressured, NotConnected and a raw ring's Full mean
//    "try again"), as trading code checks every send anyway and must not
//    pay for unwinding. What a raw ring's poll reports (closed, lapped,
//    evicted ...) is thrown, with its code.
// An exception thrown by a poll callback is caught before it reaches the C
// ABI (which must not unwind), the rest of that poll's events are skipped,
// and it is rethrown from poll() once weft has returned.
//
// Costs: what the C ABI costs; no allocation on offer, claim, commit or poll.
#ifndef WEFT_HPP
#define WEFT_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include "weft.h"

namespace weft {

// A failed call: code() is the WEFT_ERR_* value, what() weft's message.
class Error : public std::runtime_error {
public:
    Error(int code, const std::string &message)
        : std::runtime_error(std::string(weft_status_name(code)) + ": " + message), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

// The outcome of a send. Anything but Ok means nothing was written.
enum class Status : int {
    Ok = WEFT_OK,
    BackPressured = WEFT_ERR_BACK_PRESSURED,  // subscribers a full buffer behind: retry
    NotConnected = WEFT_ERR_NOT_CONNECTED,    // no subscriber yet: retry
    Closed = WEFT_ERR_CLOSED,
    TooLarge = WEFT_ERR_TOO_LARGE,
    Invalid = WEFT_ERR_INVALID,               // a claim is already open
    Full = WEFT_ERR_FULL,                     // raw ring: the consumer is a ring behind: retry
    ReservedType = WEFT_ERR_RESERVED_TYPE,    // raw ring: type id 0xFFFFFF00 and up
};

namespace detail {
inline int check(int rc) {
    if (rc < 0) throw Error(rc, weft_last_error());
    return rc;
}

// A move-only owner of a C handle freed by `Free`.
template <class T, void (*Free)(T *)>
class Handle {
public:
    Handle() = default;
    explicit Handle(T *h) noexcept : h_(h) {}
    Handle(Handle &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Handle &operator=(Handle &&o) noexcept {
        if (this != &o) {
            if (h_) Free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() {
        if (h_) Free(h_);
    }
    T *get() const noexcept { return h_; }
    T **out() noexcept { return &h_; }

private:
    T *h_ = nullptr;
};
}  // namespace detail

// A node: the process's agents, counters and channel resources. The
// configuration is TOML text (docs/config.md); WEFT_* variables override it.
class Node {
public:
    explicit Node(const std::string &config_toml = "") {
        detail::check(weft_node_new(config_toml.empty() ? nullptr : config_toml.c_str(), &h_));
    }
    Node(Node &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Node &operator=(Node &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Node(const Node &) = delete;
    Node &operator=(const Node &) = delete;
    // Closes the node; an undelivered-at-close error is dropped here: call
    // close() to see it.
    ~Node() { reset(); }

    // One round of the node's work on this thread (threading = "invoker").
    int do_work() { return detail::check(weft_node_do_work(h_)); }

    // Flushes, stops the agents and frees the node; throws
    // WEFT_ERR_UNDELIVERED naming what was not delivered in time.
    void close() { detail::check(weft_node_close(std::exchange(h_, nullptr))); }

    weft_node *get() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_) (void)weft_node_close(std::exchange(h_, nullptr));
    }
    weft_node *h_ = nullptr;
};

class Publication;

// Room for one message, written in place: commit() publishes it; destroying
// an uncommitted claim abandons it (subscribers never see it).
class Claim {
public:
    Claim(Claim &&o) noexcept : p_(std::exchange(o.p_, nullptr)), data_(o.data_) {}
    Claim &operator=(Claim &&) = delete;
    Claim(const Claim &) = delete;
    Claim &operator=(const Claim &) = delete;
    ~Claim() {
        if (p_) (void)weft_claim_abort(p_);
    }
    std::span<std::byte> data() const noexcept { return data_; }
    void commit() { detail::check(weft_claim_commit(std::exchange(p_, nullptr))); }
    void abort() { detail::check(weft_claim_abort(std::exchange(p_, nullptr))); }

private:
    friend class Publication;
    Claim(weft_publication *p, std::span<std::byte> d) : p_(p), data_(d) {}
    weft_publication *p_;
    std::span<std::byte> data_;
};

// The sending end of a channel (shm:NAME, udp://GROUP:PORT?...).
class Publication {
public:
    Publication(Node &node, const std::string &uri, std::uint32_t stream) {
        detail::check(weft_publication_new(node.get(), uri.c_str(), stream, &h_));
    }
    Publication(Publication &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Publication &operator=(Publication &&o) noexcept {
        if (this != &o) {
            weft_publication_free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Publication(const Publication &) = delete;
    Publication &operator=(const Publication &) = delete;
    ~Publication() { weft_publication_free(h_); }

    // Copies msg in as one message. Never throws on flow (see Status).
    Status offer(std::span<const std::byte> msg) noexcept {
        return static_cast<Status>(weft_publication_offer(
            h_, reinterpret_cast<const std::uint8_t *>(msg.data()), msg.size()));
    }

    // Claims room for len bytes; on Status::Ok, `out` holds the claim. One
    // claim at a time: commit or destroy it before the next offer or claim.
    Status try_claim(std::size_t len, std::optional<Claim> &out) noexcept {
        std::uint8_t *at = nullptr;
        int rc = weft_publication_try_claim(h_, len, &at);
        if (rc == WEFT_OK) out.emplace(Claim(h_, {reinterpret_cast<std::byte *>(at), len}));
        return static_cast<Status>(rc);
    }

    std::size_t max_message() const noexcept { return weft_publication_max_message(h_); }
    bool is_connected() const noexcept { return weft_publication_is_connected(h_) != 0; }
    weft_publication *get() const noexcept { return h_; }

private:
    weft_publication *h_ = nullptr;
};

// One event as a poll callback sees it; message() is valid only during the
// callback.
struct Event {
    const weft_event *raw;
    int kind() const noexcept { return raw->kind; }
    bool is_message() const noexcept { return raw->kind == WEFT_EVENT_MESSAGE; }
    std::span<const std::byte> message() const noexcept {
        return {reinterpret_cast<const std::byte *>(raw->data), raw->len};
    }
    std::uint64_t session_id() const noexcept { return raw->session_id; }
    std::uint64_t from() const noexcept { return raw->from; }
    std::uint64_t to() const noexcept { return raw->to; }
    int loss_unit() const noexcept { return raw->loss_unit; }
};

// The receiving end of a channel.
class Subscription {
public:
    Subscription(Node &node, const std::string &uri, std::uint32_t stream) {
        detail::check(weft_subscription_new(node.get(), uri.c_str(), stream, &h_));
    }
    Subscription(Subscription &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Subscription &operator=(Subscription &&o) noexcept {
        if (this != &o) {
            weft_subscription_free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Subscription(const Subscription &) = delete;
    Subscription &operator=(const Subscription &) = delete;
    ~Subscription() { weft_subscription_free(h_); }

    // Hands up to `limit` events to f(weft::Event), in order; returns how
    // many. Throws weft::Error for a foreign or corrupt channel file, and
    // rethrows what f threw.
    template <class F>
    std::size_t poll(F &&f, std::size_t limit = 64) {
        struct Ctx {
            F *f;
            std::exception_ptr error;
        } ctx{&f, nullptr};
        auto trampoline = [](void *c, const weft_event *ev) noexcept {
            auto *x = static_cast<Ctx *>(c);
            if (x->error) return;
            try {
                (*x->f)(Event{ev});
            } catch (...) {
                x->error = std::current_exception();
            }
        };
        int rc = weft_subscription_poll(h_, limit, trampoline, &ctx);
        if (ctx.error) std::rethrow_exception(ctx.error);
        return static_cast<std::size_t>(detail::check(rc));
    }

    bool is_connected() const noexcept { return weft_subscription_is_connected(h_) != 0; }
    weft_subscription *get() const noexcept { return h_; }

private:
    weft_subscription *h_ = nullptr;
};

// A gateway between a multicast stream and a local ring, run by the node.
// GatewayIn receives `stream` of udp_uri once and republishes it into
// shm_uri for any number of local subscribers; GatewayOut sends what local
// publishers write to shm_uri out on udp_uri. Destroying it stops it.
class Gateway {
public:
    static Gateway in(Node &node, const std::string &udp_uri, const std::string &shm_uri,
                      std::uint32_t stream) {
        Gateway g;
        detail::check(weft_gateway_in_new(node.get(), udp_uri.c_str(), shm_uri.c_str(), stream, g.h_.out()));
        return g;
    }
    static Gateway out(Node &node, const std::string &shm_uri, const std::string &udp_uri,
                       std::uint32_t stream) {
        Gateway g;
        detail::check(weft_gateway_out_new(node.get(), shm_uri.c_str(), udp_uri.c_str(), stream, g.h_.out()));
        return g;
    }

private:
    Gateway() = default;
    detail::Handle<weft_gateway, weft_gateway_free> h_;
};

// An application counter (or gauge) in the node's counters file: weft-stat
// shows it and exports weft_app_total{name="LABEL"}
// (weft_app_value). One writer; add/set are a load and a store.
class Counter {
public:
    enum class Kind : int { Total = WEFT_COUNTER_TOTAL, Gauge = WEFT_COUNTER_GAUGE };
    Counter(Node &node, const std::string &label, Kind kind = Kind::Total) {
        detail::check(weft_counter_new(node.get(), label.c_str(), static_cast<int>(kind), h_.out()));
    }
    void add(std::uint64_t n = 1) const noexcept { weft_counter_add(h_.get(), n); }
    void set(std::uint64_t v) const noexcept { weft_counter_set(h_.get(), v); }
    std::uint64_t get() const noexcept { return weft_counter_get(h_.get()); }

private:
    detail::Handle<weft_counter, weft_counter_free> h_;
};

// Calls f(const weft_counter_value &) for every counter of the node's
// counters file (weft's and the application's); returns how many. For
// monitoring: it allocates.
template <class F>
std::size_t for_each_counter(Node &node, F &&f) {
    auto trampoline = [](void *c, const weft_counter_value *v) noexcept {
        try {
            (*static_cast<F *>(c))(*v);
        } catch (...) {
        }
    };
    return static_cast<std::size_t>(detail::check(weft_node_counters(node.get(), trampoline, &f)));
}

// The raw shared-memory rings (weft-shm), without a node: see weft.h's
// weft_ring_* functions for who creates and who attaches each kind.
enum class RingKind : int {
    Spsc = WEFT_RING_SPSC,
    Broadcast = WEFT_RING_BROADCAST,
    BroadcastOverwrite = WEFT_RING_BROADCAST_OVERWRITE,
    Mpsc = WEFT_RING_MPSC,
};

// Sizes of a new ring; dir "" is the default directory.
struct RingConfig {
    RingKind kind = RingKind::Spsc;
    std::size_t capacity = 1 << 20;
    std::size_t max_payload = 0;  // 0: the ring's default
    std::uint32_t max_peers = 1;  // broadcast consumers / MPSC producers
    weft_ring_config c() const noexcept {
        return {static_cast<int>(kind), capacity, max_payload, max_peers};
    }
};

namespace detail {
inline const char *dir_arg(const std::string &dir) { return dir.empty() ? nullptr : dir.c_str(); }
}  // namespace detail

// The writing end of a raw ring.
class RingProducer {
public:
    static RingProducer create(const std::string &dir, const std::string &name, const RingConfig &cfg) {
        RingProducer p;
        auto c = cfg.c();
        detail::check(weft_ring_producer_create(detail::dir_arg(dir), name.c_str(), &c, p.h_.out()));
        return p;
    }
    static RingProducer attach(const std::string &dir, const std::string &name, RingKind kind) {
        RingProducer p;
        detail::check(weft_ring_producer_attach(detail::dir_arg(dir), name.c_str(), static_cast<int>(kind), p.h_.out()));
        return p;
    }

    // Copies msg in as one frame of type_id. Never throws on flow: Full
    // (and NotConnected, a reliable broadcast ring without consumers) mean
    // "try again".
    Status offer(std::uint32_t type_id, std::span<const std::byte> msg) noexcept {
        return static_cast<Status>(weft_ring_offer(
            h_.get(), type_id, reinterpret_cast<const std::uint8_t *>(msg.data()), msg.size()));
    }
    // Room for len bytes, written in place, then commit() (or abort()).
    Status try_claim(std::size_t len, std::uint32_t type_id, std::span<std::byte> &out) noexcept {
        std::uint8_t *at = nullptr;
        int rc = weft_ring_try_claim(h_.get(), len, type_id, &at);
        if (rc == WEFT_OK) out = {reinterpret_cast<std::byte *>(at), len};
        return static_cast<Status>(rc);
    }
    void commit() { detail::check(weft_ring_commit(h_.get())); }
    void abort() { detail::check(weft_ring_abort(h_.get())); }
    std::size_t max_payload() const noexcept { return weft_ring_max_payload(h_.get()); }
    weft_ring_producer *get() const noexcept { return h_.get(); }

private:
    RingProducer() = default;
    detail::Handle<weft_ring_producer, weft_ring_producer_free> h_;
};

// The reading end of a raw ring.
class RingConsumer {
public:
    static RingConsumer create(const std::string &dir, const std::string &name, const RingConfig &cfg) {
        RingConsumer c;
        auto rc = cfg.c();
        detail::check(weft_ring_consumer_create(detail::dir_arg(dir), name.c_str(), &rc, c.h_.out()));
        return c;
    }
    static RingConsumer attach(const std::string &dir, const std::string &name, RingKind kind) {
        RingConsumer c;
        detail::check(weft_ring_consumer_attach(detail::dir_arg(dir), name.c_str(), static_cast<int>(kind), c.h_.out()));
        return c;
    }

    // Hands up to `limit` frames to f(type_id, std::span<const std::byte>),
    // in place; returns how many. Throws weft::Error for what a poll reports
    // (WEFT_ERR_CLOSED once the producer closed and all is read,
    // WEFT_ERR_LAPPED, WEFT_ERR_EVICTED, WEFT_ERR_CORRUPT …: code() says
    // which) and rethrows what f threw.
    template <class F>
    std::size_t poll(F &&f, std::size_t limit = 64) {
        struct Ctx {
            F *f;
            std::exception_ptr error;
        } ctx{&f, nullptr};
        auto trampoline = [](void *c, std::uint32_t type_id, const std::uint8_t *data, std::size_t len) noexcept {
            auto *x = static_cast<Ctx *>(c);
            if (x->error) return;
            try {
                (*x->f)(type_id, std::span<const std::byte>(reinterpret_cast<const std::byte *>(data), len));
            } catch (...) {
                x->error = std::current_exception();
            }
        };
        int rc = weft_ring_poll(h_.get(), limit, trampoline, &ctx);
        if (ctx.error) std::rethrow_exception(ctx.error);
        return static_cast<std::size_t>(detail::check(rc));
    }
    // A reliable broadcast consumer that was evicted joins again.
    void rejoin() { detail::check(weft_ring_rejoin(h_.get(), nullptr, nullptr)); }
    // WEFT_PEER_*: the producer's liveness (SPSC and broadcast).
    int producer_state(std::uint64_t liveness_timeout_ns) const {
        return detail::check(weft_ring_producer_state(h_.get(), liveness_timeout_ns));
    }
    weft_ring_consumer *get() const noexcept { return h_.get(); }

private:
    RingConsumer() = default;
    detail::Handle<weft_ring_consumer, weft_ring_consumer_free> h_;
};

}  // namespace weft

#endif  // WEFT_HPP

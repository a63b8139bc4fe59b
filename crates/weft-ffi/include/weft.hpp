// weft for C++ (C++20): move-only RAII handles over the C ABI in weft.h.
//
// Error handling, by design:
//  - setting up (a node, a publication, a subscription) and faults (a foreign
//    or corrupt shared-memory file, a panic inside weft) throw weft::Error,
//    which carries the C code and message;
//  - flow on the message path never throws: offer and claim return a
//    weft::Status (BackPressured and NotConnected mean "try again"), as
//    trading code checks every send anyway and must not pay for unwinding.
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
};

namespace detail {
inline int check(int rc) {
    if (rc < 0) throw Error(rc, weft_last_error());
    return rc;
}
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

}  // namespace weft

#endif  // WEFT_HPP

// C++ market data, as the Rust example crates/weft/examples/market_data.rs
// (and interchangeable with it role for role: the quotes have the same
// layout): a publisher sends quotes over UDP multicast; a gateway receives
// them once and republishes them into a shared-memory ring; subscribers
// read that ring. Each role counts what it did in an application counter
// (weft-stat shows them; weft_app_total{name=...} in Prometheus).
//
//   market_data --role all --subscribers 3 --count 100000 [--dir DIR]
//
// `--role all` starts the other roles as child processes of this binary and
// checks that every subscriber got every quote, in order.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"

static const char *USAGE =
    "market_data --role all|publisher|gateway|subscriber [--udp URI] [--shm URI] [--count N] "
    "[--subscribers N] [--id N] [--timeout-s S] [--dir DIR] [--threading invoker]";

// One quote, as it travels: the layout of the Rust example's Quote.
struct Quote {
    std::uint64_t seq;
    std::uint32_t instrument;
    std::uint32_t pad;
    double bid;
    double ask;
};
static_assert(sizeof(Quote) == 32);

static Quote quote(std::uint64_t seq) {
    double mid = 100.0 + static_cast<double>(seq % 1000) * 0.01;
    return {seq, static_cast<std::uint32_t>(seq % 16), 0, mid - 0.005, mid + 0.005};
}

static const std::uint32_t STREAM = 1;

struct Roles {
    Args args;
    std::string udp, shm;
    std::uint64_t count;
    std::chrono::seconds timeout;
};

static void publisher(Roles &r) {
    weft::Node node(r.args.node_config());
    weft::Publication publ(node, r.udp, STREAM);
    weft::Counter sent(node, "market_data quotes sent");
    for (std::uint64_t seq = 0; seq < r.count; seq++) {
        Quote q = quote(seq);
        wait_for(node, r.timeout, "room to publish (is the gateway up?)", [&] {
            auto s = publ.offer(std::as_bytes(std::span(&q, 1)));
            if (s == weft::Status::Ok) return true;
            if (s == weft::Status::BackPressured || s == weft::Status::NotConnected) return false;
            die("publisher: " + std::string(weft_status_name(static_cast<int>(s))));
        });
        sent.add(1);
    }
    std::printf("publisher: %llu quotes sent\n", static_cast<unsigned long long>(sent.get()));
    std::fflush(stdout);
    // Stay a moment: the gateway may still ask for repairs.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < until) node.do_work();
    node.close();
}

static void gateway(Roles &r) {
    weft::Node node(r.args.node_config());
    auto gw = weft::Gateway::in(node, r.udp, r.shm, STREAM);
    // Watch the local ring too, to know when the publisher has gone.
    weft::Subscription watch(node, r.shm, STREAM);
    weft::Counter seen(node, "market_data gateway quotes");
    std::printf("gateway: ready\n");
    std::fflush(stdout);
    bool gone = false;
    wait_for(node, r.timeout * 2, "the publisher to finish", [&] {
        watch.poll([&](const weft::Event &e) {
            if (e.is_message()) seen.add(1);
            if (e.kind() == WEFT_EVENT_PUBLISHER_GONE) gone = true;
        }, 256);
        return gone;
    });
    std::printf("gateway: %llu quotes received once from the network, republished to every local subscriber\n",
                static_cast<unsigned long long>(seen.get()));
}

static void subscriber(Roles &r, unsigned id) {
    weft::Node node(r.args.node_config());
    weft::Subscription sub(node, r.shm, STREAM);
    std::string label = "market_data subscriber " + std::to_string(id) + " quotes";
    weft::Counter got(node, label);
    wait_for(node, r.timeout, "the gateway's ring", [&] {
        sub.poll([](const weft::Event &) {}, 16);
        return sub.is_connected();
    });
    std::printf("subscriber %u: ready\n", id);
    std::fflush(stdout);
    std::uint64_t next = 0;
    double spread = 0;
    wait_for(node, r.timeout, "quotes", [&] {
        sub.poll([&](const weft::Event &e) {
            if (e.kind() == WEFT_EVENT_LOSS) die("subscriber: lost " + std::to_string(e.from()) + ".." + std::to_string(e.to()));
            if (!e.is_message()) return;
            Quote q;
            if (e.message().size() != sizeof q) die("subscriber: a message of the wrong size");
            std::memcpy(&q, e.message().data(), sizeof q);
            if (q.seq != next) die("subscriber: quote " + std::to_string(q.seq) + " where " + std::to_string(next) + " was due");
            spread += q.ask - q.bid;
            next++;
            got.add(1);
        }, 256);
        return next == r.count;
    });
    // The counter as any tool reads it from the node's counters file.
    std::uint64_t in_file = 0;
    weft::for_each_counter(node, [&](const weft_counter_value &v) {
        if (std::string(v.type_name) == "app_counter" && label == v.label) in_file = v.value;
    });
    if (in_file != r.count) die("subscriber: its counters file says " + std::to_string(in_file));
    std::printf("subscriber %u: %llu quotes in order, mean spread %.4f\n", id,
                static_cast<unsigned long long>(r.count), spread / static_cast<double>(r.count));
}

// A child with this binary and a role; reads up to its "ready" line.
struct Child {
    FILE *out = nullptr;
};

static std::string quoted(const std::string &s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

static Child start(const char *self, Roles &r, const std::string &role, bool wait_ready) {
    std::string cmd = quoted(self) + " " + role;
    for (auto &[k, v] : r.args.map)
        if (k != "role" && k != "subscribers" && k != "id") cmd += " --" + k + " " + quoted(v);
    Child c{popen(cmd.c_str(), "r")};
    if (!c.out) die("market_data: cannot start " + role);
    char line[512];
    while (wait_ready && std::fgets(line, sizeof line, c.out)) {
        std::fputs(line, stdout);
        if (std::strstr(line, "ready")) break;
    }
    return c;
}

static bool finish(Child &c) {
    char line[512];
    while (std::fgets(line, sizeof line, c.out)) std::fputs(line, stdout);
    return pclose(c.out) == 0;
}

static int all(const char *self, Roles &r) {
    auto n = r.args.num("subscribers", 3);
    Child gw = start(self, r, "--role gateway", true);
    std::vector<Child> subs;
    for (unsigned i = 0; i < n; i++) subs.push_back(start(self, r, "--role subscriber --id " + std::to_string(i), true));
    Child pub = start(self, r, "--role publisher", false);
    bool ok = finish(pub);
    for (auto &s : subs) ok &= finish(s);
    ok &= finish(gw);
    if (!ok) die("market_data: a process failed");
    std::printf("market_data: %llu quotes to %llu subscribers through one gateway\n",
                static_cast<unsigned long long>(r.count), static_cast<unsigned long long>(n));
    return 0;
}

int main(int argc, char **argv) try {
    Roles r{Args(argc, argv, USAGE, {"role", "udp", "shm", "count", "subscribers", "id", "timeout-s", "dir", "threading"}),
            "", "", 0, std::chrono::seconds(0)};
    r.udp = r.args.get("udp", "udp://239.77.54.1:40454");
    r.shm = r.args.get("shm", "shm:md");
    r.count = r.args.num("count", 100000);
    r.timeout = std::chrono::seconds(r.args.num("timeout-s", 60));
    auto role = r.args.get("role", "all");
    if (role == "all") return all(argv[0], r);
    if (role == "publisher") publisher(r);
    else if (role == "gateway") gateway(r);
    else if (role == "subscriber") subscriber(r, static_cast<unsigned>(r.args.num("id", 0)));
    else {
        std::fprintf(stderr, "usage: %s\n", USAGE);
        return 2;
    }
    return 0;
} catch (const weft::Error &e) {
    die(std::string("market_data: ") + e.what());
}

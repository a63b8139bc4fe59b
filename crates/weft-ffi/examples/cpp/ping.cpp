// C++ ping, as the Rust example crates/weft/examples/ping.rs: sends --count
// messages of --size bytes on --ping, waits for each to come back on --pong
// (run a pong first: the Rust one or pong.cpp), checks every reply and
// prints round-trip percentiles. Every other message is written in place
// through a claim, the rest copied in by offer (--claims 0: all by offer,
// as the Rust ping does).
//
//   ping --ping shm:ping --pong shm:pong --count 10000 --size 32 [--dir DIR]
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "common.hpp"

static const char *USAGE =
    "ping [--ping URI] [--pong URI] [--stream N] [--count N] [--size BYTES] [--timeout-s S] [--dir DIR] [--threading invoker] [--claims 0|1]";

int main(int argc, char **argv) try {
    Args args(argc, argv, USAGE, {"ping", "pong", "stream", "count", "size", "timeout-s", "dir", "threading", "claims"});
    auto stream = static_cast<std::uint32_t>(args.num("stream", 1));
    auto count = args.num("count", 10000);
    bool claims = args.num("claims", 1) != 0;
    std::size_t size = std::clamp<std::size_t>(args.num("size", 32), 8, 4096);
    std::chrono::seconds timeout(args.num("timeout-s", 60));
    weft::Node node(args.node_config());
    weft::Publication publ(node, args.get("ping", "shm:ping"), stream);
    weft::Subscription sub(node, args.get("pong", "shm:pong"), stream);
    std::vector<std::byte> msg(size);
    std::vector<std::uint64_t> rtt_ns;
    rtt_ns.reserve(count);
    for (std::uint64_t i = 0; i < count; i++) {
        std::memcpy(msg.data(), &i, 8);
        std::fill(msg.begin() + 8, msg.end(), std::byte(i));
        auto t0 = std::chrono::steady_clock::now();
        wait_for(node, timeout, "room to send (is pong running?)", [&] {
            weft::Status s;
            if (!claims || i % 2 == 0) {
                s = publ.offer(msg);
            } else {
                std::optional<weft::Claim> claim;
                s = publ.try_claim(size, claim);
                if (s == weft::Status::Ok) {
                    std::memcpy(claim->data().data(), msg.data(), size);
                    claim->commit();
                }
            }
            if (s == weft::Status::Ok) return true;
            if (s == weft::Status::BackPressured || s == weft::Status::NotConnected) return false;
            die("ping: send: " + std::string(weft_status_name(static_cast<int>(s))));
        });
        bool got = false;
        wait_for(node, timeout, "a reply", [&] {
            sub.poll([&](const weft::Event &e) {
                if (e.is_message()) {
                    auto m = e.message();
                    if (m.size() != size || std::memcmp(m.data(), msg.data(), size) != 0)
                        die("ping: reply " + std::to_string(i) + " differs from what was sent");
                    got = true;
                } else if (e.kind() != WEFT_EVENT_NEW_SESSION) {
                    die("ping: unexpected event " + std::to_string(e.kind()));
                }
            }, 1);
            return got;
        });
        rtt_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(rtt_ns.begin(), rtt_ns.end());
    auto pct = [&](double p) { return rtt_ns[std::min(rtt_ns.size() - 1, std::size_t(p * rtt_ns.size()))]; };
    std::printf("ping: %llu round trips of %zu bytes, p50 %llu ns, p99 %llu ns, max %llu ns\n",
                (unsigned long long)count, size, (unsigned long long)pct(0.5),
                (unsigned long long)pct(0.99), (unsigned long long)rtt_ns.back());
    node.close();
    return 0;
} catch (const weft::Error &e) {
    die(std::string("ping: ") + e.what());
}

// C++ pong, as the Rust example crates/weft/examples/pong.rs: echoes every
// message of --ping onto --pong, --count times, then exits.
//
//   pong --ping shm:ping --pong shm:pong --count 10000 [--dir DIR]
#include <cstring>
#include <thread>

#include "common.hpp"

static const char *USAGE = "pong [--ping URI] [--pong URI] [--stream N] [--count N] [--timeout-s S] [--dir DIR] [--threading invoker]";

int main(int argc, char **argv) try {
    Args args(argc, argv, USAGE, {"ping", "pong", "stream", "count", "timeout-s", "dir", "threading"});
    auto stream = static_cast<std::uint32_t>(args.num("stream", 1));
    auto count = args.num("count", 10000);
    std::chrono::seconds timeout(args.num("timeout-s", 60));
    weft::Node node(args.node_config());
    weft::Subscription sub(node, args.get("ping", "shm:ping"), stream);
    weft::Publication publ(node, args.get("pong", "shm:pong"), stream);
    std::printf("pong: ready\n");
    std::fflush(stdout);
    std::byte buf[4096];
    for (std::uint64_t i = 0; i < count; i++) {
        std::size_t len = 0;
        wait_for(node, timeout, "a ping", [&] {
            sub.poll([&](const weft::Event &e) {
                if (e.is_message()) {
                    std::memcpy(buf, e.message().data(), e.message().size());
                    len = e.message().size();
                }
            }, 1);
            return len != 0;
        });
        wait_for(node, timeout, "room to reply", [&] {
            auto s = publ.offer({buf, len});
            if (s == weft::Status::Ok) return true;
            if (s == weft::Status::BackPressured || s == weft::Status::NotConnected) return false;
            die("pong: reply: " + std::string(weft_status_name(static_cast<int>(s))));
        });
    }
    std::printf("pong: echoed %llu\n", (unsigned long long)count);
    // Stay until ping has our last reply: UDP repairs may still be asked for.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (std::chrono::steady_clock::now() < until) node.do_work();
    node.close();
    return 0;
} catch (const weft::Error &e) {
    die(std::string("pong: ") + e.what());
}

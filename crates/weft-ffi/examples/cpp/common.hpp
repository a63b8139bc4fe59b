// Shared by the C++ examples: flags, and waiting with the node's work done
// on this thread (threading = "invoker": one busy thread per process).
#ifndef WEFT_EXAMPLES_COMMON_HPP
#define WEFT_EXAMPLES_COMMON_HPP

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "weft.hpp"

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

[[noreturn]] inline void die(const std::string &what) {
    std::fprintf(stderr, "%s\n", what.c_str());
    std::exit(1);
}

// --key value flags; every key must be one of `known`.
struct Args {
    std::map<std::string, std::string> map;
    Args(int argc, char **argv, const char *usage, std::initializer_list<const char *> known) {
        for (int i = 1; i < argc; i += 2) {
            std::string k = argv[i];
            bool ok = k.rfind("--", 0) == 0 && i + 1 < argc;
            if (ok) {
                ok = false;
                for (auto *kk : known) ok |= k.substr(2) == kk;
            }
            if (!ok) {
                std::fprintf(stderr, "usage: %s\n", usage);
                std::exit(2);
            }
            map[k.substr(2)] = argv[i + 1];
        }
    }
    std::string get(const std::string &k, const std::string &d) const {
        auto it = map.find(k);
        return it == map.end() ? d : it->second;
    }
    unsigned long long num(const std::string &k, unsigned long long d) const {
        auto it = map.find(k);
        return it == map.end() ? d : std::strtoull(it->second.c_str(), nullptr, 10);
    }
    // The node's TOML: invoker threading (the only mode these examples
    // run: they do the node's work on their one thread), and --dir if given.
    std::string node_config() const {
        if (get("threading", "invoker") != "invoker") die("--threading: only invoker");
        std::string cfg = "threading = \"invoker\"\n";
        if (map.count("dir")) cfg += "dir = \"" + map.at("dir") + "\"\n";
        return cfg;
    }
};


// As the Rust examples' wait_for/next_event with --idle busy-spin: each
// round runs the node's work, then `step`, until step returns true; a round
// that did nothing spins once (PAUSE). Dies with `what` after `timeout`.
template <class F>
void wait_for(weft::Node &node, std::chrono::seconds timeout, const char *what, F &&step) {
    auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int work = node.do_work();
        if (step()) return;
        if (std::chrono::steady_clock::now() > until) die(std::string("timed out waiting for ") + what);
        if (work == 0) spin_pause();
    }
}

#endif

// The ledger alone: how many transfers per second one group-committing
// writer makes durable in SQLite (WAL, synchronous=NORMAL unless --full),
// with many commits in flight, as the gateway produces them.
//
//   alou_bench_ledger [--transfers N] [--inflight K] [--settlements] [--full]
//
// --settlements commits what one billed request writes (a charge, its
// usage record, the end of its hold, four audit events) instead of a bare
// transfer. Prints one JSON line.
#include "alou/billing/ledger.hpp"
#include "alou/storage/database.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace net = boost::asio;
using namespace alou;

int main(int argc, char** argv) {
  long transfers = 200'000;
  int inflight = 512;
  bool settlements = false;
  bool full = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--transfers" && i + 1 < argc) {
      transfers = std::stol(argv[++i]);
    } else if (a == "--inflight" && i + 1 < argc) {
      inflight = std::stoi(argv[++i]);
    } else if (a == "--settlements") {
      settlements = true;
    } else if (a == "--full") {
      full = true;
    } else {
      std::fprintf(stderr, "usage: %s [--transfers N] [--inflight K] [--settlements] [--full]\n", argv[0]);
      return 2;
    }
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("alou-ledger-bench-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  int rc = 0;
  {
    auto db = storage::Database::open_file(dir / "alou.db", full ? "FULL" : "NORMAL");
    if (!db) return std::fprintf(stderr, "%s\n", db.error().message.c_str()), 1;
    if (auto m = (*db)->migrate(storage::default_migrations_dir()); !m) {
      return std::fprintf(stderr, "%s\n", m.error().message.c_str()), 1;
    }
    auto ledger = billing::Ledger::open(**db, billing::LedgerOptions{dir / "ledger.key", 1000, true});
    if (!ledger) return std::fprintf(stderr, "%s\n", ledger.error().message.c_str()), 1;
    auto& l = **ledger;

    net::io_context ioc;
    std::atomic<long> next{0};
    std::atomic<long> failed{0};
    auto worker = [&](int w) -> net::awaitable<void> {
      for (long i = next.fetch_add(1); i < transfers; i = next.fetch_add(1)) {
        billing::Batch b;
        const std::string account = "key:k" + std::to_string((i + w) % 1000);
        b.transfers.push_back(billing::Transfer{"charge", account, std::string(billing::kRevenue), 1000 + i % 977,
                                                "req-" + std::to_string(i), "", ""});
        if (settlements) {
          b.transfers.back().meta = R"({"model":"m","provider":"p","prompt_tokens":12,"completion_tokens":30})";
          b.usage = billing::UsageRow{"req-" + std::to_string(i), account, "m", "p", 12, 30, 0, 1000, false};
          b.holds_ended.push_back({"hold_" + std::to_string(i), account, 0});
          for (const char* kind : {"request", "route", "completion", "usage"}) {
            b.events.push_back(billing::EventRow{"req-" + std::to_string(i), account, kind, R"({"k":1})", 0});
          }
        }
        auto r = co_await l.commit(std::move(b));
        if (!r) ++failed;
      }
    };
    const auto t0 = std::chrono::steady_clock::now();
    for (int w = 0; w < inflight; ++w) net::co_spawn(ioc, worker(w), net::detached);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) threads.emplace_back([&ioc] { ioc.run(); });
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto report = l.verify_sync();
    nlohmann::json out = {{"what", settlements ? "settlements" : "transfers"},
                          {"count", transfers},
                          {"inflight", inflight},
                          {"synchronous", full ? "FULL" : "NORMAL"},
                          {"seconds", secs},
                          {"per_second", static_cast<long>(transfers / secs)},
                          {"failed", failed.load()},
                          {"verify_ok", report.ok}};
    std::printf("%s\n", out.dump().c_str());
    rc = failed.load() == 0 && report.ok ? 0 : 1;
    l.close();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

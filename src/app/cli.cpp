// The command line of DESIGN.md. Secrets never come from argv: the admin
// key, provider keys and the like are read from the environment only.
#include "alou/app/app.hpp"
#include "alou/auth/keys.hpp"
#include "alou/billing/billing.hpp"
#include "alou/billing/ledger.hpp"
#include "alou/core/log.hpp"
#include "alou/core/metrics.hpp"
#include "alou/core/money.hpp"
#include "alou/http/filters.hpp"
#include "alou/http/server.hpp"
#include "alou/mock/upstream.hpp"
#include "alou/storage/database.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_future.hpp>
#include <spdlog/spdlog.h>

#include <thread>

#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace alou::app {
namespace {

constexpr const char* kUsage = R"(usage: alou <command> [options]

commands:
  serve    [--config FILE] [--listen HOST:PORT] [--data-dir DIR]   run the gateway
  migrate  [--config FILE]                                         apply database migrations and exit
  keys create --name NAME [--role owner|member] [--models m1,m2] [--tools t1,server__*] [--rpm N] [--tpm N] [--concurrency N] [--budget USD]
  keys list
  keys revoke ID_OR_NAME
  credit ACCOUNT USD [--memo TEXT]                                 add credit (ACCOUNT: key id or name, wallet address)
  ledger verify                                                    check the hash chain and the balances (exit 1 if bad)
  mock-upstream --listen HOST:PORT                                 deterministic fake providers over HTTP
  version                                                          print the version

Every setting can also come from ALOU_<SECTION>_<KEY> (e.g. ALOU_SERVER_LISTEN).
Run `alou <command> --help` for details.
)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
  bool help = false;
};

// --flag value | --flag=value; flags in `booleans` take no value.
Result<Args> parse_args(int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      a.help = true;
    } else if (arg.starts_with("--")) {
      std::string name = arg.substr(2);
      std::string value;
      if (const auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return Error::bad_request("--" + name + " needs a value");
      }
      a.flags[name] = value;
    } else {
      a.positional.push_back(arg);
    }
  }
  return a;
}

Result<void> only_flags(const Args& a, std::initializer_list<const char*> allowed) {
  for (const auto& [k, v] : a.flags) {
    bool ok = false;
    for (const char* name : allowed) ok = ok || k == name;
    if (!ok) return Error::bad_request("unknown option --" + k);
  }
  return {};
}

int fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "alou: %s\n", msg.c_str());
  return code;
}

Result<Settings> settings_for(const Args& a) {
  const auto it = a.flags.find("config");
  const std::string path = it != a.flags.end() ? it->second : "config/alou.toml";
  auto s = load_settings(path);
  if (!s) return s;
  if (auto l = a.flags.find("listen"); l != a.flags.end()) s->server.listen = l->second;
  if (auto d = a.flags.find("data-dir"); d != a.flags.end()) s->storage.data_dir = d->second;
  return s;
}

bool init_logging(const Settings& s) {
  std::string err;
  if (!log::init(s.log, &err)) {
    std::fprintf(stderr, "alou: %s: log: %s\n", s.source.c_str(), err.c_str());
    return false;
  }
  return true;
}

int cmd_serve(const Args& a) {
  if (a.help) {
    std::puts("usage: alou serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]\n\n"
              "Runs the gateway until SIGINT/SIGTERM, then drains in-flight requests and exits 0.");
    return 0;
  }
  if (auto r = only_flags(a, {"config", "listen", "data-dir"}); !r) return fail(r.error().message, 2);
  auto s = settings_for(a);
  if (!s) return fail(s.error().message);
  if (!init_logging(*s)) return 1;
  auto app = App::create(std::move(*s));
  if (!app) return fail(app.error().message);
  return (*app)->run_until_signal();
}

int cmd_migrate(const Args& a) {
  if (a.help) {
    std::puts("usage: alou migrate [--config FILE]\n\nApplies migrations/NNNN_*.sql not yet recorded and exits.");
    return 0;
  }
  if (auto r = only_flags(a, {"config", "data-dir"}); !r) return fail(r.error().message, 2);
  auto s = settings_for(a);
  if (!s) return fail(s.error().message);
  auto db = storage::Database::open(s->storage);
  if (!db) return fail(db.error().message);
  auto st = (*db)->migrate(storage::default_migrations_dir());
  if (!st) return fail(st.error().message);
  for (const auto& name : st->applied) std::printf("applied %s\n", name.c_str());
  std::printf("schema version %d\n", st->version);
  return 0;
}

Result<std::unique_ptr<billing::Ledger>> open_ledger(const Settings& s, storage::Database& db) {
  return billing::Ledger::open(
      db, billing::LedgerOptions{.key_file = std::filesystem::path(s.storage.data_dir) / "ledger.key",
                                 .checkpoint_every = s.billing.checkpoint_every,
                                 .release_stale_holds = false,
                                 .metrics = nullptr,
                                 // The serving process owns the journal: a CLI commits directly.
                                 .journal_file = {},
                                 .journal_sync = false});
}

// Credits `account` from system:credits; prints the entry and the balance.
int give_credit(billing::Ledger& ledger, const std::string& account, std::int64_t nanos, const std::string& memo) {
  billing::Batch b;
  b.transfers.push_back(billing::Transfer{"credit", std::string(billing::kCredits), account, nanos, "", memo, ""});
  auto seq = ledger.commit_sync(std::move(b));
  if (!seq) return fail(seq.error().message);
  std::printf("credited %s USD to %s (ledger entry %lld); balance %s USD\n", format_money(nanos).c_str(),
              account.c_str(), static_cast<long long>(*seq), format_money(ledger.funds(account).balance_nanos).c_str());
  return 0;
}

int cmd_credit(const Args& a) {
  if (a.help || a.positional.size() != 2) {
    std::puts("usage: alou credit ACCOUNT USD [--memo TEXT]\n\n"
              "ACCOUNT: an API key's id or name, a wallet address, or key:<id> / wallet:<address>.");
    return a.help ? 0 : 2;
  }
  if (auto r = only_flags(a, {"config", "data-dir", "memo"}); !r) return fail(r.error().message, 2);
  const auto nanos = parse_money(a.positional[1]);
  if (!nanos || *nanos <= 0) return fail("USD must be a positive amount like 25 or 2.50", 2);
  auto s = settings_for(a);
  if (!s) return fail(s.error().message);
  spdlog::set_level(spdlog::level::warn);
  auto db = storage::Database::open(s->storage);
  if (!db) return fail(db.error().message);
  if (auto m = (*db)->migrate(storage::default_migrations_dir()); !m) return fail(m.error().message);
  std::string account = a.positional[0];
  if (account.starts_with("system:")) return fail("system accounts cannot be credited", 2);
  if (!billing::is_account_id(account)) {
    auth::KeyStore keys(**db, std::chrono::milliseconds(0), std::nullopt);
    if (auto k = keys.find_blocking(account)) {
      account = "key:" + k->id;
    } else if (auto w = billing::wallet_account(account)) {
      account = *w;
    } else {
      return fail("no key or wallet named \"" + account + "\"");
    }
  }
  auto ledger = open_ledger(*s, **db);
  if (!ledger) return fail(ledger.error().message);
  const auto memo = a.flags.count("memo") ? a.flags.at("memo") : std::string();
  const int rc = give_credit(**ledger, account, *nanos, memo);
  (*ledger)->close();
  return rc;
}

int cmd_ledger(const Args& a) {
  const std::string sub = a.positional.empty() ? "" : a.positional[0];
  if (a.help || sub != "verify") {
    std::puts("usage: alou ledger verify\n\n"
              "Recomputes the hash chain, every balance, the zero-sum invariant and the signed checkpoints.\n"
              "Prints a JSON report; exit 0 if everything holds, 1 otherwise (naming the first bad entry).");
    return a.help ? 0 : 2;
  }
  if (auto r = only_flags(a, {"config", "data-dir"}); !r) return fail(r.error().message, 2);
  auto s = settings_for(a);
  if (!s) return fail(s.error().message);
  spdlog::set_level(spdlog::level::warn);
  auto db = storage::Database::open(s->storage);
  if (!db) return fail(db.error().message);
  if (auto m = (*db)->migrate(storage::default_migrations_dir()); !m) return fail(m.error().message);
  auto ledger = open_ledger(*s, **db);
  if (!ledger) return fail(ledger.error().message);
  const auto report = (*ledger)->verify_sync();
  std::printf("%s\n", report.to_json().dump(2).c_str());
  if (report.ok) {
    std::fprintf(stderr, "ledger OK: %lld entries, %lld accounts, %lld checkpoints\n",
                 static_cast<long long>(report.entries), static_cast<long long>(report.accounts),
                 static_cast<long long>(report.checkpoints));
  } else {
    std::fprintf(stderr, "ledger BROKEN%s: %s\n",
                 report.bad_seq ? (" at entry " + std::to_string(*report.bad_seq)).c_str() : "",
                 report.problems.empty() ? "" : report.problems.front().c_str());
  }
  return report.ok ? 0 : 1;
}

std::string fmt_opt(const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : "-"; }

int cmd_keys(const Args& a) {
  const std::string sub = a.positional.empty() ? "" : a.positional[0];
  if (a.help || sub.empty()) {
    std::puts(
        "usage: alou keys create --name NAME [--role owner|member] [--models m1,m2] [--tools t1,server__*] "
        "[--rpm N] [--tpm N] [--concurrency N] [--budget USD] [--credit USD]\n"
        "       alou keys list\n"
        "       alou keys revoke ID_OR_NAME\n\n"
        "create prints the new key (sk-alou-...) once, alone on its line on stdout.");
    return sub.empty() && !a.help ? 2 : 0;
  }
  if (auto r = only_flags(a, {"config", "data-dir", "name", "role", "models", "tools", "rpm", "tpm", "concurrency", "budget", "credit"}); !r) {
    return fail(r.error().message, 2);
  }
  auto s = settings_for(a);
  if (!s) return fail(s.error().message);
  spdlog::set_level(spdlog::level::warn);
  auto db = storage::Database::open(s->storage);
  if (!db) return fail(db.error().message);
  if (auto m = (*db)->migrate(storage::default_migrations_dir()); !m) return fail(m.error().message);
  auth::KeyStore keys(**db, std::chrono::milliseconds(0), std::nullopt);

  if (sub == "create") {
    auth::NewKey nk;
    const auto name = a.flags.find("name");
    if (name == a.flags.end()) return fail("keys create needs --name NAME", 2);
    nk.name = name->second;
    if (auto r = a.flags.find("role"); r != a.flags.end()) {
      if (r->second != "owner" && r->second != "member") return fail("--role must be owner or member", 2);
      nk.role = r->second == "owner" ? Role::kOwner : Role::kMember;
    }
    for (auto [flag, target] : {std::pair{"models", &nk.models}, std::pair{"tools", &nk.tools}}) {
      const auto m = a.flags.find(flag);
      if (m == a.flags.end()) continue;
      std::string item;
      for (const char c : m->second + ",") {
        if (c == ',') {
          if (!item.empty()) target->push_back(item);
          item.clear();
        } else {
          item.push_back(c);
        }
      }
    }
    for (auto [flag, target] : {std::pair{"rpm", &nk.rpm}, std::pair{"tpm", &nk.tpm},
                                 std::pair{"concurrency", &nk.max_concurrency}}) {
      if (auto f = a.flags.find(flag); f != a.flags.end()) {
        try {
          std::size_t used = 0;
          const long long v = std::stoll(f->second, &used);
          if (used != f->second.size() || v <= 0) throw std::invalid_argument("");
          *target = v;
        } catch (const std::exception&) {
          return fail(std::string("--") + flag + " must be a positive integer", 2);
        }
      }
    }
    if (auto b = a.flags.find("budget"); b != a.flags.end()) {
      auto nanos = parse_money(b->second);
      if (!nanos || *nanos < 0) return fail("--budget must be a non-negative USD amount like 25 or 2.50", 2);
      nk.budget_nanos = *nanos;
    }
    std::optional<std::int64_t> credit;
    if (auto c = a.flags.find("credit"); c != a.flags.end()) {
      credit = parse_money(c->second);
      if (!credit || *credit <= 0) return fail("--credit must be a positive USD amount like 25 or 2.50", 2);
    }
    auto created = keys.create(nk);
    if (!created) return fail(created.error().message);
    std::fprintf(stderr, "created key %s (%s, %s)\n", created->first.id.c_str(), created->first.name.c_str(),
                 role_name(created->first.role));
    std::printf("%s\n", created->second.c_str());
    std::fflush(stdout);
    if (credit) {
      auto ledger = open_ledger(*s, **db);
      if (!ledger) return fail(ledger.error().message);
      // The key line stays alone on stdout: the credit line goes to stderr.
      billing::Batch b;
      b.transfers.push_back(billing::Transfer{"credit", std::string(billing::kCredits), "key:" + created->first.id,
                                              *credit, "", "keys create --credit", ""});
      auto seq = (*ledger)->commit_sync(std::move(b));
      (*ledger)->close();
      if (!seq) return fail(seq.error().message);
      std::fprintf(stderr, "credited %s USD to key:%s\n", format_money(*credit).c_str(), created->first.id.c_str());
    }
    return 0;
  }
  if (sub == "list") {
    auto list = keys.list();
    if (!list) return fail(list.error().message);
    std::printf("%-21s %-20s %-13s %-7s %-6s %-8s %-5s %-12s %-20s %-8s %s\n", "ID", "NAME", "PREFIX", "ROLE", "RPM",
                "TPM", "CONC", "BUDGET", "MODELS", "STATE", "TOOLS");
    const auto joined = [](const std::vector<std::string>& v) {
      std::string out;
      for (const auto& m : v) out += (out.empty() ? "" : ",") + m;
      return out.empty() ? std::string("*") : out;
    };
    for (const auto& k : *list) {
      // TOOLS last: a long allow-list does not shift the other columns.
      const std::string budget = k.budget_nanos ? format_money(*k.budget_nanos) : std::string("-");
      std::printf("%-21s %-20s %-13s %-7s %-6s %-8s %-5s %-12s %-20s %-8s %s\n", k.id.c_str(), k.name.c_str(),
                  k.prefix.c_str(), role_name(k.role), fmt_opt(k.rpm).c_str(), fmt_opt(k.tpm).c_str(),
                  fmt_opt(k.max_concurrency).c_str(), budget.c_str(), joined(k.models).c_str(),
                  k.revoked_at_ms ? "revoked" : "active", joined(k.tools).c_str());
    }
    return 0;
  }
  if (sub == "revoke") {
    if (a.positional.size() != 2) return fail("usage: alou keys revoke ID_OR_NAME", 2);
    auto r = keys.revoke(a.positional[1]);
    if (!r) return fail(r.error().message);
    std::printf("revoked %s (%s)\n", r->id.c_str(), r->name.c_str());
    return 0;
  }
  return fail("unknown keys command \"" + sub + "\" (create, list, revoke)", 2);
}

// Serves DESIGN.md's mock model over real HTTP in OpenAI, Anthropic and
// Gemini formats, for tests and benchmarks of the provider adapters.
int cmd_mock_upstream(const Args& a) {
  if (a.help) {
    std::puts("usage: alou mock-upstream --listen HOST:PORT\n\n"
              "Deterministic fake providers: OpenAI /v1/chat/completions, /v1/embeddings, /v1/models;\n"
              "Anthropic /v1/messages; Gemini /v1beta/models/{m}:generateContent and :streamGenerateContent.\n"
              "Directives in the last user message: /tool NAME {json}, /fail CODE, /slow MS, /cut N.");
    return 0;
  }
  if (auto r = only_flags(a, {"listen", "threads"}); !r) return fail(r.error().message, 2);
  ServerSettings ss;
  ss.listen = a.flags.count("listen") ? a.flags.at("listen") : "127.0.0.1:8090";
  ss.sse_heartbeat_ms = 15000;
  LogSettings ls;
  ls.access_log = false;
  std::string err;
  log::init(ls, &err);
  boost::asio::io_context ioc;
  metrics::Registry registry;
  http::Router router;
  mock::add_upstream_routes(router);
  std::vector<std::shared_ptr<http::Filter>> filters{http::make_request_id_filter()};
  auto server = http::Server::create(ioc, ss, std::move(router), std::move(filters), registry);
  if (!server) return fail(server.error().message);
  (*server)->start();
  const auto ep = (*server)->endpoint();
  spdlog::info("mock upstream listening on http://{}:{}", ep.address().to_string(), ep.port());
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) {
    boost::asio::co_spawn(ioc, (*server)->shutdown(std::chrono::milliseconds(2000)),
                          [&ioc](std::exception_ptr) { ioc.stop(); });
  });
  std::thread second([&ioc] { ioc.run(); });
  ioc.run();
  second.join();
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "version" || cmd == "--version") {
    std::printf("alou %s\n", kVersion);
    return 0;
  }
  auto args = parse_args(argc, argv, 2);
  if (!args) return fail(args.error().message, 2);
  if (cmd == "serve") return cmd_serve(*args);
  if (cmd == "migrate") return cmd_migrate(*args);
  if (cmd == "keys") return cmd_keys(*args);
  if (cmd == "mock-upstream") return cmd_mock_upstream(*args);
  if (cmd == "credit") return cmd_credit(*args);
  if (cmd == "ledger") return cmd_ledger(*args);
  if (cmd == "node") {
    return fail("\"" + cmd + "\" is part of the contract but not built yet in this version", 2);
  }
  std::fputs(kUsage, stderr);
  return fail("unknown command \"" + cmd + "\"", 2);
}

}  // namespace alou::app

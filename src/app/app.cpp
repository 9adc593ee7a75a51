#include "alou/app/app.hpp"

#include "alou/auth/filters.hpp"
#include "alou/core/blocking_pool.hpp"
#include "alou/core/io_loop.hpp"
#include "alou/billing/billing.hpp"
#include "alou/auth/keys.hpp"
#include "alou/auth/limits.hpp"
#include "alou/core/log.hpp"
#include "alou/core/metrics.hpp"
#include "alou/gateway/gateway.hpp"
#include "alou/gateway/provider_keys.hpp"
#include "alou/http/filters.hpp"
#include "alou/http/server.hpp"
#include "alou/mcp/service.hpp"
#include "alou/ops/ops.hpp"
#include "alou/sessions/sessions.hpp"
#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"
#include "alou/wallet/wallet.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_future.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <future>
#include <thread>

namespace alou::app {
namespace net = boost::asio;

namespace {

class AppImpl final : public App {
 public:
  explicit AppImpl(Settings s) : settings_(std::move(s)) {}

  ~AppImpl() override { stop(); }

  Result<void> init(AppOptions options) {
    auto db = storage::Database::open(settings_.storage);
    if (!db) return db.error();
    db_ = std::move(*db);
    auto migrated = db_->migrate(storage::default_migrations_dir());
    if (!migrated) return migrated.error();
    for (const auto& name : migrated->applied) spdlog::info("applied migration {}", name);

    auto kv = settings_.storage.redis_url.empty()
                  ? storage::make_embedded_kv(ioc_.get_executor(), *db_, settings_.storage)
                  : storage::make_redis_kv(ioc_.get_executor(), settings_.storage);
    if (!kv) return kv.error();
    kv_ = std::move(*kv);

    std::optional<std::string> admin_key;
    if (!settings_.auth.admin_key_env.empty()) {
      admin_key = process_env(settings_.auth.admin_key_env.c_str());
      if (admin_key && admin_key->size() < 16) {
        return Error::bad_request(settings_.auth.admin_key_env + " must be at least 16 characters", "config_invalid");
      }
      if (admin_key) log::add_secret(*admin_key);
    }
    keys_ = std::make_unique<auth::KeyStore>(*db_, std::chrono::milliseconds(settings_.auth.key_cache_ms), admin_key);

    auto ledger = billing::Ledger::open(
        *db_, billing::LedgerOptions{.key_file = std::filesystem::path(settings_.storage.data_dir) / "ledger.key",
                                     .checkpoint_every = settings_.billing.checkpoint_every,
                                     .release_stale_holds = true,
                                     .metrics = &metrics_,
                                     .journal_file = std::filesystem::path(settings_.storage.data_dir) / "ledger.journal",
                                     .journal_sync = settings_.storage.sqlite_synchronous == "FULL"});
    if (!ledger) return ledger.error();
    ledger_ = std::move(*ledger);
    ledger_->start_polling(std::chrono::milliseconds(200));
    billing_ = std::make_unique<billing::Billing>(settings_, *ledger_, *db_, metrics_,
                                                  [this](std::string name) -> net::awaitable<std::optional<std::string>> {
                                                    auto k = co_await keys_->find(std::move(name));
                                                    if (!k) co_return std::nullopt;
                                                    co_return k->id;
                                                  });
    if (auto r = billing_->load_prices(); !r) return r.error();

    // Every limit of a caller in one place: RPM, TPM, concurrency (in the
    // KV, in memory while it is down), then budget and balance (billing).
    limits_ = std::make_unique<auth::LimitStore>(*kv_, metrics_);
    policy_ = auth::make_usage_policy(*billing_, *limits_, metrics_, ioc_.get_executor());

    // Provider keys stored through the admin API, encrypted under ALOU_MASTER_KEY.
    std::optional<gateway::MasterKey> master;
    if (auto text = process_env(gateway::kMasterKeyEnv); text && !text->empty()) {
      log::add_secret(*text);
      auto parsed = gateway::MasterKey::parse(*text);
      if (!parsed) return parsed.error();
      master = std::move(*parsed);
    }
    provider_keys_ = std::make_unique<gateway::ProviderKeys>(settings_, *db_, std::move(master));
    auto stored_keys = provider_keys_->load_blocking();
    if (!stored_keys) return stored_keys.error();

    auto gateway = gateway::Gateway::create(settings_, ioc_.get_executor(), metrics_, policy_.get(), *stored_keys,
                                             kv_.get());
    if (!gateway) return gateway.error();
    gateway_ = std::move(*gateway);
    // Keys stored or deleted through the admin API apply at once.
    provider_keys_->on_change([g = gateway_.get()](const std::string& provider, std::string key) {
      return g->set_provider_key(provider, std::move(key));
    });

    // Heavy crypto (wallet signature recovery) runs here, off the io threads.
    crypto_pool_ = std::make_unique<BlockingPool>(2);
    auto wallet = wallet::Service::create(settings_, *db_, *kv_, &wallet::system_now_ms, crypto_pool_.get());
    if (!wallet) return wallet.error();
    wallet_ = std::move(*wallet);
    sessions_ = sessions::make_kv_store(*kv_, settings_.sessions);

    auto mcp = mcp::Service::create({.settings = settings_, .executor = ioc_.get_executor(), .db = *db_, .kv = *kv_,
                                     .metrics = metrics_});
    if (!mcp) return mcp.error();
    mcp_ = std::move(*mcp);

    http::Router router;
    gateway_->add_routes(router);
    provider_keys_->add_routes(router);
    billing_->add_routes(router);
    wallet_->add_routes(router);
    sessions::add_routes(router, *sessions_);
    mcp_->add_routes(router);
    ops::add_routes(router, ops::StatusSources{
                                .version = kVersion,
                                .started = started_,
                                .db = *db_,
                                .kv = *kv_,
                                .metrics = metrics_,
                                .connections = [this] { return server_ ? server_->connections() : 0; },
                                .providers = [this] { return gateway_->status(); },
                                .mcp_servers = [this] { return mcp_->servers_status(); },
                                .rate_limits = [this] { return limits_->status(); },
                            });
    if (options.extra_routes) options.extra_routes(router);

    // The filter chain, in order (STYLE.md: read it top to bottom).
    std::vector<std::shared_ptr<http::Filter>> filters;
    filters.push_back(http::make_request_id_filter());
    filters.push_back(http::make_observability_filter(metrics_, router, settings_.log.access_log));
    filters.push_back(http::make_cors_filter(settings_.server.cors_origins));
    filters.push_back(auth::make_auth_filter({auth::make_key_resolver(*keys_), wallet_->resolver()}));
    filters.push_back(auth::make_rate_limit_filter(*policy_));

    auto server = http::Server::create(ioc_, settings_.server, std::move(router), std::move(filters), metrics_);
    if (!server) return server.error();
    server_ = std::move(*server);
    return {};
  }

  net::ip::tcp::endpoint endpoint() const override { return server_->endpoint(); }

  std::string url() const override {
    const auto ep = endpoint();
    const auto addr = ep.address();
    std::string host = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
    return std::string(server_->tls() ? "https" : "http") + "://" + host + ":" + std::to_string(ep.port());
  }

  void start() override {
    if (started_threads_) return;
    started_threads_ = true;
    server_->start();
    const unsigned n = settings_.server.io_threads();
    const std::chrono::microseconds busy_poll(settings_.server.busy_poll_us);
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this, busy_poll] { run_io(ioc_, busy_poll); });
    mcp_->start();
    spdlog::info("listening on {} ({} io thread{}, KV: {})", url(), n, n == 1 ? "" : "s", kv_->backend());
    // The contract promises this line whatever the log level.
    if (!spdlog::should_log(spdlog::level::info)) std::fprintf(stderr, "alou: listening on %s\n", url().c_str());
  }

  void stop() override {
    if (stopped_) return;
    stopped_ = true;
    if (started_threads_) {
      auto done = net::co_spawn(ioc_, server_->shutdown(std::chrono::milliseconds(settings_.server.shutdown_timeout_ms)),
                                net::use_future);
      done.wait();
      auto mcp_done = net::co_spawn(ioc_, mcp_->shutdown(), net::use_future);
      mcp_done.wait();
      work_.reset();
      ioc_.stop();
      for (auto& t : threads_) t.join();
      threads_.clear();
    }
    // Every settlement of a finished request is queued by now: write them
    // (and a final checkpoint) before the database closes.
    if (ledger_) ledger_->close();
    if (kv_) kv_->flush();
    if (db_) db_->close();
    spdlog::info("stopped");
  }

  int run_until_signal() override {
    net::io_context signals_ctx;
    net::signal_set signals(signals_ctx, SIGINT, SIGTERM);
    int which = 0;
    signals.async_wait([&](const boost::system::error_code&, int sig) { which = sig; });
    start();
    signals_ctx.run();
    spdlog::info("received signal {}, shutting down", which);
    stop();
    return 0;
  }

  metrics::Registry& metrics() override { return metrics_; }
  storage::Database& db() override { return *db_; }
  storage::Kv& kv() override { return *kv_; }
  auth::KeyStore& keys() override { return *keys_; }
  mcp::Service& mcp() override { return *mcp_; }

 private:
  // Declaration order is teardown order reversed: the metrics outlive the
  // io_context (whose destructor destroys any coroutine frame still queued,
  // and those may touch gauges), and every io object dies before it.
  Settings settings_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  metrics::Registry metrics_;
  // The database and the ledger outlive the io_context too: a coroutine
  // frame it destroys may still own a hold, whose release reaches them.
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<billing::Ledger> ledger_;
  std::unique_ptr<billing::Billing> billing_;
  std::unique_ptr<auth::LimitStore> limits_;
  std::unique_ptr<UsagePolicy> policy_;  // limits_, then billing_
  // One io thread: Asio is told so (its scheduler then skips the locking
  // and wake-ups a thread pool needs for the queue it runs itself).
  net::io_context ioc_{settings_.server.io_threads() == 1 ? 1 : BOOST_ASIO_CONCURRENCY_HINT_DEFAULT};
  net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(ioc_);
  std::unique_ptr<storage::Kv> kv_;
  std::unique_ptr<auth::KeyStore> keys_;
  std::unique_ptr<gateway::ProviderKeys> provider_keys_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<BlockingPool> crypto_pool_;
  std::unique_ptr<wallet::Service> wallet_;
  std::unique_ptr<sessions::Store> sessions_;
  std::unique_ptr<mcp::Service> mcp_;
  std::unique_ptr<http::Server> server_;
  std::vector<std::thread> threads_;
  bool started_threads_ = false;
  bool stopped_ = false;
};

}  // namespace

Result<std::unique_ptr<App>> App::create(Settings settings, AppOptions options) {
  auto app = std::make_unique<AppImpl>(std::move(settings));
  if (auto r = app->init(std::move(options)); !r) return r.error();
  return std::unique_ptr<App>(std::move(app));
}

}  // namespace alou::app

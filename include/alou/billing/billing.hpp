#pragma once
// Billing: prices, holds and settlements over the ledger (a Meter for the
// gateway), and the billing, ledger, usage and audit endpoints.
#include "alou/billing/ledger.hpp"
#include "alou/core/config.hpp"
#include "alou/core/metering.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>

namespace alou::http {
class Router;
}
namespace alou::metrics {
class Registry;
}

namespace alou::billing {

// Nanos per million tokens.
struct Price {
  std::int64_t input = 0;
  std::int64_t output = 0;
  std::optional<std::int64_t> cached_input;  // absent: the input price
};

// USD per million tokens (config) -> nanos per million tokens.
std::int64_t nanos_per_mtok(double usd);
// tokens x price, summed, rounded half-up to a nano (one rounding per
// request, in 128-bit arithmetic).
std::int64_t cost_nanos(const Price& p, std::int64_t prompt_tokens, std::int64_t cached_tokens,
                        std::int64_t completion_tokens);
// The hold for a request: rounded up.
std::int64_t hold_nanos(const Price& p, std::int64_t prompt_tokens, std::int64_t max_output_tokens);

// The ledger account of a principal.
std::string account_of(const Principal& p);

// "key:…", "wallet:…" and "system:…" are account ids already.
bool is_account_id(std::string_view text);
// An Ethereum (0x + 40 hex) or Solana (base58, 32-44 chars) address as its
// wallet account, else nullopt.
std::optional<std::string> wallet_account(std::string_view text);

// Finds an API key by id or name and returns its id (for credits by name).
using KeyFinder = std::function<boost::asio::awaitable<std::optional<std::string>>(std::string)>;

class Billing final : public Meter {
 public:
  // `ledger` must outlive this object.
  Billing(const Settings& settings, Ledger& ledger, storage::Database& db, metrics::Registry& metrics,
          KeyFinder find_key);
  // Loads the price overrides (blocking, start-up).
  Result<void> load_prices();

  Result<std::unique_ptr<Hold>> hold(const HoldRequest& req) override;
  void audit(const std::string& subject, const Principal* principal, std::string kind,
             const nlohmann::json& data) override;

  // /api/billing/*, /api/usage, /api/ledger/*, /api/admin/credit,
  // /api/admin/prices, /api/audit/timeline/{id}.
  void add_routes(http::Router& router);

  Price price_of(const std::string& model) const;
  // The output cap of a request to `model` that sets none ([[models]]
  // max_output_tokens, else billing.default_max_output_tokens).
  std::int64_t max_output_of(const std::string& model) const;
  // A request without its own output cap is refused (402) rather than held
  // for fewer output tokens than this.
  static constexpr std::int64_t kMinOutputTokens = 16;
  Ledger& ledger() { return ledger_; }

  // Resolves a credit target: "key:<id>", "wallet:<address>", a key id or
  // name, or a wallet address (0x… or base58).
  boost::asio::awaitable<Result<std::string>> resolve_account(std::string text);

 private:
  // Waits until every settlement delivered so far is in the ledger's
  // tables and balances (Ledger::sync): the readers of those call it first.
  boost::asio::awaitable<void> settled();
  friend class HoldImpl;
  Ledger& ledger_;
  storage::Database& db_;
  metrics::Registry& metrics_;
  KeyFinder find_key_;
  std::int64_t default_max_output_ = 4096;
  std::map<std::string, std::int64_t> max_output_;  // [[models]] max_output_tokens
  metrics::Counter& uncharged_;                      // priced beyond a hold, not charged
  mutable std::shared_mutex prices_mu_;
  std::map<std::string, Price> config_prices_;
  std::map<std::string, Price> prices_;  // effective: config overridden by the table
};

}  // namespace alou::billing

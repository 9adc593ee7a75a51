#include "alou/billing/billing.hpp"

#include "alou/core/json_text.hpp"

#include "alou/core/metrics.hpp"
#include "alou/core/money.hpp"
#include "alou/core/random.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>

namespace alou::billing {
namespace {

using nlohmann::json;
namespace net = boost::asio;
__extension__ typedef __int128 i128;  // GCC and Clang; -Wpedantic needs the marker

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t clamp64(i128 v) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  return v > kMax ? kMax : static_cast<std::int64_t>(v);
}

// Time-ordered (milliseconds, then random): the holds table's primary key
// grows at its right edge instead of dirtying a random page per hold.
std::string random_id() {
  // "hold_", 11 hex digits of milliseconds, 16 random hex digits.
  std::string id = "hold_00000000000";
  put_hex(id.data() + 5, 11, static_cast<std::uint64_t>(now_ms()));
  return id + random_hex(8);
}

json money_fields(std::string_view name, std::int64_t nanos) {
  return {{std::string(name), format_money(nanos)}, {std::string(name) + "_nanos", nanos}};
}

json price_json(const Price& p) {
  json j = {{"input_per_mtok", format_money(p.input)}, {"output_per_mtok", format_money(p.output)}};
  j["cached_input_per_mtok"] = p.cached_input ? json(format_money(*p.cached_input)) : json(nullptr);
  return j;
}

// A price field of a request: a decimal string or a JSON number (read from
// its text, never through a double).
std::optional<std::int64_t> money_field(const json& v) {
  if (v.is_string()) return parse_money(v.get<std::string>());
  if (v.is_number()) return parse_money(v.dump());
  return std::nullopt;
}

std::optional<std::int64_t> int_param(const http::Exchange& ex, std::string_view name, bool& bad) {
  const auto v = ex.query_param(name);
  if (!v) return std::nullopt;
  std::int64_t out = 0;
  const auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size()) {
    bad = true;
    return std::nullopt;
  }
  return out;
}

std::string csv_field(std::string_view v) {
  if (v.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(v);
  std::string out = "\"";
  for (const char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::int64_t nanos_per_mtok(double usd) { return static_cast<std::int64_t>(std::llround(usd * 1e9)); }

std::int64_t cost_nanos(const Price& p, std::int64_t prompt_tokens, std::int64_t cached_tokens,
                        std::int64_t completion_tokens) {
  prompt_tokens = std::max<std::int64_t>(0, prompt_tokens);
  cached_tokens = std::clamp<std::int64_t>(cached_tokens, 0, prompt_tokens);
  completion_tokens = std::max<std::int64_t>(0, completion_tokens);
  const i128 scaled = static_cast<i128>(prompt_tokens - cached_tokens) * p.input +
                      static_cast<i128>(cached_tokens) * p.cached_input.value_or(p.input) +
                      static_cast<i128>(completion_tokens) * p.output;
  return clamp64((scaled + 500'000) / 1'000'000);  // half-up (non-negative)
}

std::int64_t hold_nanos(const Price& p, std::int64_t prompt_tokens, std::int64_t max_output_tokens) {
  const i128 scaled = static_cast<i128>(std::max<std::int64_t>(0, prompt_tokens)) * p.input +
                      static_cast<i128>(std::max<std::int64_t>(0, max_output_tokens)) * p.output;
  return clamp64((scaled + 999'999) / 1'000'000);  // up
}

std::string account_of(const Principal& p) {
  switch (p.kind) {
    case Principal::Kind::kAdminKey: return std::string(kAdmin);
    case Principal::Kind::kWallet: return "wallet:" + p.id;
    case Principal::Kind::kApiKey: break;
  }
  return "key:" + p.id;
}

// One request's reservation. Settled or released exactly once; its audit
// events are written in the same commit.
class HoldImpl final : public Hold {
 public:
  HoldImpl(Billing& b, std::string account, std::int64_t amount, std::string id, Price price, const HoldRequest& r,
           std::int64_t output_cap, bool may_overdraw)
      : b_(b),
        account_(std::move(account)),
        amount_(amount),
        id_(std::move(id)),
        price_(price),
        model_(r.model),
        request_id_(r.request_id),
        fallbacks_(r.fallback_models),
        output_cap_(output_cap),
        may_overdraw_(may_overdraw) {}

  ~HoldImpl() override {
    if (!done_) release();
  }

  std::int64_t amount_nanos() const override { return amount_; }
  std::int64_t output_cap() const override { return output_cap_; }

  void priced_as(std::string model) override {
    if (model == model_) return;
    for (const auto& f : fallbacks_) {
      if (f != model) continue;
      price_ = b_.price_of(model);
      model_ = std::move(model);
      return;
    }
  }

  void event(std::string kind, std::string data) override {
    EventRow row{request_id_, account_, std::move(kind), std::move(data), now_ms()};
    if (!done_) {
      events_.push_back(std::move(row));
      return;
    }
    Batch late;  // after the settlement (a stream's last word)
    late.events.push_back(std::move(row));
    b_.ledger_.commit_detached(std::move(late));
  }

  net::awaitable<Result<std::int64_t>> settle(Usage usage, std::string provider) override {
    auto batch = settlement(usage, std::move(provider));
    const auto cost = batch.usage->cost_nanos;
    if (batch.transfers.empty() && batch.holds_ended.empty()) {
      // Free and nothing reserved: no money moves, nothing to wait for.
      b_.ledger_.commit_detached(std::move(batch));
      co_return Result<std::int64_t>(boost::system::in_place_value, cost);
    }
    auto r = co_await b_.ledger_.commit_durable(std::move(batch));
    if (!r) {
      // Not recorded: nothing may be delivered; the reservation goes.
      Batch undo;
      if (amount_ > 0) undo.holds_ended.push_back({id_, account_, amount_});
      b_.ledger_.commit_detached(std::move(undo));
      co_return r.error();
    }
    co_return Result<std::int64_t>(boost::system::in_place_value, cost);
  }

  void settle_detached(Usage usage, std::string provider) override {
    b_.ledger_.commit_detached(settlement(usage, std::move(provider)));
  }

  void release() override {
    if (done_) return;
    done_ = true;
    Batch batch;
    batch.events = std::move(events_);
    if (amount_ > 0) batch.holds_ended.push_back({id_, account_, amount_});
    if (!batch.events.empty() || !batch.holds_ended.empty()) b_.ledger_.commit_detached(std::move(batch));
  }

 private:
  Batch settlement(const Usage& u, std::string provider) {
    done_ = true;
    Batch batch;
    const auto priced = cost_nanos(price_, u.prompt_tokens, u.cached_tokens, u.completion_tokens);
    // The hold is the most a request may cost: an account that may not
    // overdraw is never charged beyond it (the prompt was estimated low, or
    // an upstream ignored the output cap). The rest is recorded, not charged.
    const auto cost = may_overdraw_ ? priced : std::min(priced, amount_);
    if (cost < priced) {
      b_.uncharged_.inc(static_cast<std::uint64_t>(priced - cost));
      spdlog::warn("[{}] usage priced at {} USD exceeds its hold of {} USD: {} USD not charged", request_id_,
                   format_money(priced), format_money(amount_), format_money(priced - cost));
    }
    UsageRow row{request_id_, account_, model_, provider, u.prompt_tokens, u.completion_tokens,
                 u.cached_tokens, cost, u.estimated};
    // Written as text (keys in the order nlohmann::json would sort them):
    // no JSON tree per settlement.
    JsonObject usage_json;
    usage_json.num("cached_tokens", u.cached_tokens)
        .num("completion_tokens", u.completion_tokens)
        .str("cost", format_money(cost))
        .num("cost_nanos", cost)
        .boolean("estimated", u.estimated)
        .str("model", model_)
        .num("prompt_tokens", u.prompt_tokens);
    if (cost < priced) usage_json.num("uncharged_nanos", priced - cost);
    std::string usage_event = usage_json.done();
    if (cost > 0) {
      JsonObject price;
      if (price_.cached_input) {
        price.num("cached_input", *price_.cached_input);
      } else {
        price.null("cached_input");
      }
      price.num("input", price_.input).num("output", price_.output);
      std::string meta = JsonObject{}
                             .num("cached_tokens", u.cached_tokens)
                             .num("completion_tokens", u.completion_tokens)
                             .boolean("estimated", u.estimated)
                             .str("model", model_)
                             .raw("price_nanos_per_mtok", price.done())
                             .num("prompt_tokens", u.prompt_tokens)
                             .str("provider", provider)
                             .done();
      batch.transfers.push_back(Transfer{"charge", account_, std::string(kRevenue), cost, request_id_,
                                         u.estimated ? "estimated usage" : "", std::move(meta)});
    }
    events_.push_back(EventRow{request_id_, account_, "usage", std::move(usage_event), now_ms()});
    batch.events = std::move(events_);
    if (amount_ > 0) batch.holds_ended.push_back({id_, account_, amount_});
    batch.usage = std::move(row);
    return batch;
  }

  Billing& b_;
  std::string account_;
  std::int64_t amount_;
  std::string id_;
  Price price_;
  std::string model_;
  std::string request_id_;
  std::vector<std::string> fallbacks_;
  std::int64_t output_cap_;
  bool may_overdraw_;
  std::vector<EventRow> events_;
  bool done_ = false;
};

Billing::Billing(const Settings& settings, Ledger& ledger, storage::Database& db, metrics::Registry& metrics,
                 KeyFinder find_key)
    : ledger_(ledger),
      db_(db),
      metrics_(metrics),
      find_key_(std::move(find_key)),
      uncharged_(metrics.counter("alou_billing_uncharged_nanos_total",
                                 "Usage priced beyond its hold and not charged (nano-USD): prompts estimated low, or"
                                 " upstreams that ignored the output cap")) {
  default_max_output_ = settings.billing.default_max_output_tokens;
  for (const auto& m : settings.models) {
    if (m.max_output_tokens > 0) max_output_[m.name] = m.max_output_tokens;
    Price p{nanos_per_mtok(m.price.input_per_mtok), nanos_per_mtok(m.price.output_per_mtok), std::nullopt};
    if (m.price.cached_input_per_mtok) p.cached_input = nanos_per_mtok(*m.price.cached_input_per_mtok);
    config_prices_[m.name] = p;
  }
  prices_ = config_prices_;
}

net::awaitable<void> Billing::settled() {
  // A closed ledger answers at once with an error: the reader goes on
  // with what the tables hold.
  auto r = co_await ledger_.sync();
  (void)r;
}

Result<void> Billing::load_prices() {
  return db_.run_sync([this](SQLite::Database& c) -> Result<void> {
    try {
      SQLite::Statement st(c,
                           "SELECT model, input_nanos_per_mtok, output_nanos_per_mtok, cached_input_nanos_per_mtok"
                           " FROM prices");
      std::unique_lock lock(prices_mu_);
      while (st.executeStep()) {
        Price p{st.getColumn(1).getInt64(), st.getColumn(2).getInt64(), std::nullopt};
        if (!st.getColumn(3).isNull()) p.cached_input = st.getColumn(3).getInt64();
        prices_[st.getColumn(0).getString()] = p;
      }
    } catch (const std::exception& e) {
      return Error::internal(std::string("cannot load prices: ") + e.what(), "ledger_unavailable");
    }
    return {};
  });
}

std::int64_t Billing::max_output_of(const std::string& model) const {
  const auto it = max_output_.find(model);
  return it == max_output_.end() ? default_max_output_ : it->second;
}

Price Billing::price_of(const std::string& model) const {
  std::shared_lock lock(prices_mu_);
  const auto it = prices_.find(model);
  return it == prices_.end() ? Price{} : it->second;
}

Result<std::unique_ptr<Hold>> Billing::hold(const HoldRequest& req) {
  if (!req.principal) return Error::unauthorized("no credentials");
  const auto account = account_of(*req.principal);
  // The dearest of the models that may serve the request, per token kind:
  // its hold covers whichever of them answers.
  Price price = price_of(req.model);
  std::int64_t model_cap = max_output_of(req.model);
  for (const auto& f : req.fallback_models) {
    const auto p = price_of(f);
    price.input = std::max(price.input, p.input);
    price.output = std::max(price.output, p.output);
    model_cap = std::max(model_cap, max_output_of(f));
  }
  price.cached_input.reset();  // held at the input price
  const bool own_cap = req.max_output_tokens > 0;
  const auto want_out = own_cap ? req.max_output_tokens : model_cap;
  const auto prompt = std::max<std::int64_t>(0, req.prompt_tokens);
  const auto max_amount = hold_nanos(price, prompt, want_out);
  // A request with its own cap is held in full or refused; one without is
  // capped at what the balance and budget cover, down to kMinOutputTokens.
  const auto min_out = own_cap ? want_out : std::min<std::int64_t>(want_out, kMinOutputTokens);
  const auto min_amount = hold_nanos(price, prompt, min_out);
  const bool overdraft = req.principal->kind == Principal::Kind::kAdminKey;
  const auto r = ledger_.reserve(account, ReserveAsk{.min = min_amount,
                                                     .max = max_amount,
                                                     .overdraft = overdraft,
                                                     .budget = overdraft ? std::nullopt : req.principal->budget_nanos});
  if (r.refused == Reserved::Refused::kBudget) {
    return Error{402, "budget_exceeded",
                 "this key's budget is spent: this request may cost up to " + format_money(min_amount) + " USD and " +
                     format_money(r.covered) + " USD of the key's budget of " +
                     format_money(*req.principal->budget_nanos) + " USD is left"};
  }
  if (r.refused == Reserved::Refused::kBalance) {
    return Error{402, "insufficient_balance",
                 "insufficient balance: this request may cost up to " + format_money(min_amount) + " USD and " +
                     format_money(r.covered) + " USD is available; add credit" +
                     (own_cap ? std::string(" or lower max_tokens") : std::string())};
  }
  auto amount = r.amount;
  auto cap = want_out;
  if (amount < max_amount && price.output > 0) {
    // The balance covers less than the model's maximum: the most output it
    // does cover, held exactly.
    const i128 room = static_cast<i128>(amount) * 1'000'000 - static_cast<i128>(prompt) * price.input;
    cap = std::clamp<std::int64_t>(static_cast<std::int64_t>(room / price.output), min_out, want_out);
    const auto exact = hold_nanos(price, prompt, cap);
    if (exact < amount) ledger_.unreserve(account, amount - exact);
    amount = std::min(amount, exact);
  }
  std::string id;
  if (amount > 0) {
    id = random_id();
    ledger_.persist_hold(HoldRow{id, account, amount, req.request_id, req.model});
  }
  // The cap keeps a charge within its hold: an account that may overdraw
  // (system:admin) needs none, and is held for the model's maximum as before.
  const auto output_cap = own_cap || price.output == 0 || overdraft ? 0 : cap;
  return std::unique_ptr<Hold>(new HoldImpl(*this, account, amount, std::move(id), price_of(req.model), req,
                                            output_cap, overdraft));
}

void Billing::audit(const std::string& subject, const Principal* principal, std::string kind, const json& data) {
  Batch b;
  b.events.push_back(EventRow{subject, principal ? account_of(*principal) : "", std::move(kind), data.dump(), now_ms()});
  ledger_.commit_detached(std::move(b));
}

bool is_account_id(std::string_view text) {
  return text.starts_with("key:") || text.starts_with("wallet:") || text.starts_with("system:");
}

std::optional<std::string> wallet_account(std::string_view text) {
  const bool eth = text.size() == 42 && text.starts_with("0x") &&
                   text.substr(2).find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
  const bool sol = text.size() >= 32 && text.size() <= 44 &&
                   text.find_first_not_of("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz") ==
                       std::string_view::npos;
  if (eth || sol) return "wallet:" + std::string(text);
  return std::nullopt;
}

net::awaitable<Result<std::string>> Billing::resolve_account(std::string text) {
  if (text.starts_with("system:")) {
    co_return Error::bad_request("system accounts cannot be named here", "invalid_account");
  }
  if (is_account_id(text)) co_return text;
  if (find_key_) {
    auto id = co_await find_key_(text);
    if (id) co_return "key:" + *id;
  }
  if (auto w = wallet_account(text)) co_return *w;
  co_return Error::not_found("no key or wallet named \"" + text + "\"", "account_not_found");
}

void Billing::add_routes(http::Router& router) {
  using http::Access;
  const http::RouteOptions member{.access = Access::kAuthenticated};
  const http::RouteOptions owner{.access = Access::kOwner};

  // The account a request is about: the caller's own, or (owner only) ?account=.
  auto target = [this](http::Exchange& ex) -> net::awaitable<Result<std::string>> {
    const auto asked = ex.query_param("account");
    if (!asked || asked->empty()) co_return account_of(*ex.principal);
    if (!ex.principal->is_owner()) {
      co_return Error::forbidden("only an owner may read another account", "forbidden");
    }
    auto r = co_await resolve_account(*asked);
    co_return r;
  };

  router.get(
      "/api/billing/balance",
      [this, target](http::Exchange& ex) -> net::awaitable<http::Response> {
        auto account = co_await target(ex);
        if (!account) co_return ex.error(account.error());
        co_await settled();
        const auto f = ledger_.funds(*account);
        json body = {{"account", *account}, {"currency", "USD"}};
        body.update(money_fields("balance", f.balance_nanos));
        body.update(money_fields("held", f.held_nanos));
        body.update(money_fields("available", f.available()));
        body.update(money_fields("spent", f.spent_nanos));
        // The caller's own key with a budget: what is left of it.
        if (ex.principal && ex.principal->budget_nanos && *account == account_of(*ex.principal)) {
          body.update(money_fields("budget", *ex.principal->budget_nanos));
          body.update(money_fields(
              "budget_left", std::max<std::int64_t>(0, *ex.principal->budget_nanos - f.spent_nanos - f.held_nanos)));
        }
        co_return ex.json(http::Status::ok, body.dump());
      },
      member);

  router.get(
      "/api/billing/ledger",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        co_await settled();
        bool bad = false;
        const auto limit = int_param(ex, "limit", bad).value_or(100);
        const auto after = int_param(ex, "after", bad).value_or(0);
        const auto since = int_param(ex, "since", bad);
        const auto until = int_param(ex, "until", bad);
        if (bad || limit < 1 || limit > 1000) {
          co_return ex.error(Error::bad_request(
              "limit must be 1..1000; after, since and until must be integers (since/until: Unix ms)",
              "invalid_parameter"));
        }
        const auto kind = ex.query_param("kind").value_or("");
        std::string account;
        const auto asked = ex.query_param("account");
        if (asked && !asked->empty()) {
          if (!ex.principal->is_owner()) {
            co_return ex.error(Error::forbidden("only an owner may read another account", "forbidden"));
          }
          if (*asked != "*") {
            auto r = co_await resolve_account(*asked);
            if (!r) co_return ex.error(r.error());
            account = *r;
          }
        } else {
          account = account_of(*ex.principal);
        }
        auto rows = co_await db_.run([&](SQLite::Database& c) {
          std::string sql = std::string("SELECT ") + kEntryColumns + " FROM ledger_entries WHERE seq > ?";
          if (!account.empty()) sql += " AND (debit = ? OR credit = ?)";
          if (since) sql += " AND ts_ms >= ?";
          if (until) sql += " AND ts_ms < ?";
          if (!kind.empty()) sql += " AND kind = ?";
          sql += " ORDER BY seq LIMIT ?";
          SQLite::Statement st(c, sql);
          int i = 1;
          st.bind(i++, after);
          if (!account.empty()) {
            st.bind(i++, account);
            st.bind(i++, account);
          }
          if (since) st.bind(i++, *since);
          if (until) st.bind(i++, *until);
          if (!kind.empty()) st.bind(i++, kind);
          st.bind(i++, limit);
          std::vector<Entry> out;
          while (st.executeStep()) {
            out.push_back(entry_from_row(st));
          }
          return out;
        });
        const auto accept = ex.request()[http::bhttp::field::accept];
        if (accept.find("text/csv") != std::string_view::npos) {
          std::string csv = "seq,ts_ms,kind,debit,credit,amount,amount_nanos,request_id,memo,hash\n";
          for (const auto& e : rows) {
            csv += std::to_string(e.seq) + ',' + std::to_string(e.ts_ms) + ',' + csv_field(e.kind) + ',' +
                   csv_field(e.debit) + ',' + csv_field(e.credit) + ',' + format_money(e.amount_nanos) + ',' +
                   std::to_string(e.amount_nanos) + ',' + csv_field(e.request_id) + ',' + csv_field(e.memo) + ',' +
                   e.hash + '\n';
          }
          auto res = ex.json(http::Status::ok, std::move(csv));
          res.set(http::bhttp::field::content_type, "text/csv; charset=utf-8");
          co_return res;
        }
        json data = json::array();
        for (const auto& e : rows) {
          json j = {{"seq", e.seq},          {"ts_ms", e.ts_ms},   {"kind", e.kind},
                    {"debit", e.debit},      {"credit", e.credit}, {"amount", format_money(e.amount_nanos)},
                    {"amount_nanos", e.amount_nanos}, {"request_id", e.request_id}, {"memo", e.memo},
                    {"hash", e.hash}};
          j["meta"] = e.meta.empty() ? json(nullptr) : json::parse(e.meta, nullptr, false);
          data.push_back(std::move(j));
        }
        json body = {{"object", "list"}, {"data", data}};
        body["next_after"] =
            static_cast<std::int64_t>(rows.size()) == limit ? json(rows.back().seq) : json(nullptr);
        co_return ex.json(http::Status::ok, body.dump());
      },
      member);

  router.get(
      "/api/usage",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        co_await settled();
        bool bad = false;
        const auto since = int_param(ex, "since", bad);
        const auto until = int_param(ex, "until", bad);
        const auto group = ex.query_param("group_by").value_or("model");
        if (bad) co_return ex.error(Error::bad_request("since and until are Unix ms integers", "invalid_parameter"));
        std::string column;
        if (group == "model") {
          column = "model";
        } else if (group == "key" || group == "account") {
          column = "account";
        } else if (group == "day") {
          column = "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')";
        } else {
          co_return ex.error(Error::bad_request("group_by must be model, key or day", "invalid_parameter"));
        }
        std::string account;
        const auto asked = ex.query_param("account");
        if (!ex.principal->is_owner()) {
          if (asked && !asked->empty()) {
            co_return ex.error(Error::forbidden("only an owner may read another account", "forbidden"));
          }
          account = account_of(*ex.principal);
        } else if (asked && !asked->empty()) {
          auto r = co_await resolve_account(*asked);
          if (!r) co_return ex.error(r.error());
          account = *r;
        }
        auto data = co_await db_.run([&](SQLite::Database& c) {
          std::string sql = "SELECT " + column +
                            " AS g, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),"
                            " SUM(cost_nanos), SUM(estimated) FROM usage_records WHERE 1 = 1";
          if (!account.empty()) sql += " AND account = ?";
          if (since) sql += " AND ts_ms >= ?";
          if (until) sql += " AND ts_ms < ?";
          sql += " GROUP BY g ORDER BY g";
          SQLite::Statement st(c, sql);
          int i = 1;
          if (!account.empty()) st.bind(i++, account);
          if (since) st.bind(i++, *since);
          if (until) st.bind(i++, *until);
          json out = json::array();
          while (st.executeStep()) {
            json row = {{"group", st.getColumn(0).getString()},
                        {"requests", st.getColumn(1).getInt64()},
                        {"prompt_tokens", st.getColumn(2).getInt64()},
                        {"completion_tokens", st.getColumn(3).getInt64()},
                        {"cached_tokens", st.getColumn(4).getInt64()},
                        {"estimated_requests", st.getColumn(6).getInt64()}};
            row.update(money_fields("cost", st.getColumn(5).getInt64()));
            out.push_back(std::move(row));
          }
          return out;
        });
        json body = {{"group_by", group}, {"data", data}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      member);

  router.post(
      "/api/admin/credit",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        const auto in = json::parse(ex.request().body(), nullptr, false);
        if (!in.is_object() || !in.contains("account") || !in["account"].is_string() || !in.contains("amount")) {
          co_return ex.error(Error::bad_request("expected {\"account\": \"…\", \"amount\": \"12.50\", \"memo\"?}",
                                                "invalid_json"));
        }
        const auto amount = money_field(in["amount"]);
        if (!amount || *amount <= 0) {
          co_return ex.error(Error::bad_request("amount must be a positive USD amount with at most 9 decimals",
                                                "invalid_amount"));
        }
        const std::string memo = in.value("memo", "");
        if (memo.size() > 500) co_return ex.error(Error::bad_request("memo is too long (500 max)", "invalid_memo"));
        auto account = co_await resolve_account(in["account"].get<std::string>());
        if (!account) co_return ex.error(account.error());
        Batch b;
        b.transfers.push_back(Transfer{"credit", std::string(kCredits), *account, *amount, ex.request_id, memo, ""});
        auto seq = co_await ledger_.commit(std::move(b));
        if (!seq) co_return ex.error(seq.error());
        const auto f = ledger_.funds(*account);
        json body = {{"seq", *seq}, {"account", *account}};
        body.update(money_fields("amount", *amount));
        body.update(money_fields("balance", f.balance_nanos));
        co_return ex.json(http::Status::created, body.dump());
      },
      owner);

  router.get(
      "/api/admin/prices",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        json data = json::array();
        {
          std::shared_lock lock(prices_mu_);
          for (const auto& [model, p] : prices_) {
            json j = price_json(p);
            j["model"] = model;
            const auto c = config_prices_.find(model);
            const bool from_config = c != config_prices_.end() && c->second.input == p.input &&
                                     c->second.output == p.output && c->second.cached_input == p.cached_input;
            j["source"] = from_config ? "config" : "override";
            data.push_back(std::move(j));
          }
        }
        json body = {{"object", "list"}, {"data", data}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      owner);

  router.put(
      "/api/admin/prices",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        const auto in = json::parse(ex.request().body(), nullptr, false);
        if (!in.is_object() || !in.contains("model") || !in["model"].is_string() || !in.contains("input_per_mtok") ||
            !in.contains("output_per_mtok")) {
          co_return ex.error(Error::bad_request(
              "expected {\"model\", \"input_per_mtok\", \"output_per_mtok\", \"cached_input_per_mtok\"?} (USD)",
              "invalid_json"));
        }
        const std::string model = in["model"].get<std::string>();
        {
          std::shared_lock lock(prices_mu_);
          if (!config_prices_.count(model)) {
            co_return ex.error(Error::not_found("no model named \"" + model + "\" is configured", "model_not_found"));
          }
        }
        const auto input = money_field(in["input_per_mtok"]);
        const auto output = money_field(in["output_per_mtok"]);
        std::optional<std::int64_t> cached;
        bool cached_bad = false;
        if (in.contains("cached_input_per_mtok") && !in["cached_input_per_mtok"].is_null()) {
          cached = money_field(in["cached_input_per_mtok"]);
          cached_bad = !cached || *cached < 0;
        }
        if (!input || !output || *input < 0 || *output < 0 || cached_bad) {
          co_return ex.error(Error::bad_request("prices must be non-negative USD amounts per million tokens",
                                                "invalid_price"));
        }
        const Price p{*input, *output, cached};
        auto ok = co_await db_.run([&](SQLite::Database& c) -> bool {
          try {
            SQLite::Statement st(c,
                                 "INSERT INTO prices (model, input_nanos_per_mtok, output_nanos_per_mtok,"
                                 " cached_input_nanos_per_mtok, updated_at_ms) VALUES (?,?,?,?,?)"
                                 " ON CONFLICT(model) DO UPDATE SET input_nanos_per_mtok = excluded.input_nanos_per_mtok,"
                                 " output_nanos_per_mtok = excluded.output_nanos_per_mtok,"
                                 " cached_input_nanos_per_mtok = excluded.cached_input_nanos_per_mtok,"
                                 " updated_at_ms = excluded.updated_at_ms");
            st.bind(1, model);
            st.bind(2, p.input);
            st.bind(3, p.output);
            if (p.cached_input) {
              st.bind(4, *p.cached_input);
            } else {
              st.bind(4);
            }
            st.bind(5, now_ms());
            st.exec();
            return true;
          } catch (const std::exception& e) {
            spdlog::error("prices: {}", e.what());
            return false;
          }
        });
        if (!ok) co_return ex.error(Error::unavailable("the price could not be saved", "storage_unavailable"));
        {
          std::unique_lock lock(prices_mu_);
          prices_[model] = p;
        }
        json body = price_json(p);
        body["model"] = model;
        co_return ex.json(http::Status::ok, body.dump());
      },
      owner);

  router.get(
      "/api/ledger/verify",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        co_await settled();
        auto report = co_await ledger_.verify();
        co_return ex.json(http::Status::ok, report.to_json().dump());
      },
      member);

  router.get(
      "/api/ledger/pubkey",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        json body = {{"algorithm", "ed25519"},
                     {"public_key", ledger_.public_key()},
                     {"signed_message", "alou-ledger-checkpoint\\n<seq>\\n<hash>"}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      {.access = Access::kPublic});

  router.get(
      "/api/audit/timeline/{id}",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        const std::string subject(ex.param("id"));
        const std::string account = ex.principal->is_owner() ? "" : account_of(*ex.principal);
        co_await settled();
        auto events = co_await db_.run([&](SQLite::Database& c) {
          std::string sql = "SELECT id, ts_ms, kind, data, account FROM events WHERE subject = ?";
          if (!account.empty()) sql += " AND account = ?";
          sql += " ORDER BY id";
          SQLite::Statement st(c, sql);
          st.bind(1, subject);
          if (!account.empty()) st.bind(2, account);
          json out = json::array();
          while (st.executeStep()) {
            append_stored_events(out, st.getColumn(0).getInt64(), st.getColumn(1).getInt64(),
                                 st.getColumn(2).getString(), st.getColumn(3).getString(),
                                 st.getColumn(4).getString());
          }
          return out;
        });
        if (events.empty()) {
          co_return ex.error(Error::not_found("no events for \"" + subject + "\"", "not_found"));
        }
        json body = {{"subject", subject}, {"events", events}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      member);
}

}  // namespace alou::billing

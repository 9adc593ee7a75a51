#pragma once
// Who is making a request, once authenticated. Set by the auth filter.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace alou {

enum class Role { kMember, kOwner };

struct Principal {
  enum class Kind { kApiKey, kAdminKey, kWallet };
  Kind kind = Kind::kApiKey;
  std::string id;                       // key id, "admin", or the wallet address
  std::string name;
  Role role = Role::kMember;
  std::vector<std::string> models;      // empty: every model
  std::optional<std::int64_t> rpm;      // requests per minute
  std::optional<std::int64_t> tpm;      // tokens per minute
  std::optional<std::int64_t> max_concurrency;  // requests in flight at once
  std::optional<std::int64_t> budget_nanos;

  bool is_owner() const { return role == Role::kOwner; }
  bool may_use_model(std::string_view model) const {
    if (models.empty()) return true;
    for (const auto& m : models) {
      if (m == model) return true;
    }
    return false;
  }
};

inline const char* role_name(Role r) { return r == Role::kOwner ? "owner" : "member"; }

}  // namespace alou

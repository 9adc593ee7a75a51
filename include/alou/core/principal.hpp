#pragma once
// Who is making a request, once authenticated. Set by the auth filter.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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
  // Tools this principal may see and call (empty: every tool): exposed tool
  // names ("everything__echo") or "<server>__*" for every tool of a server.
  std::vector<std::string> tools;

  bool is_owner() const { return role == Role::kOwner; }
  bool may_use_model(std::string_view model) const {
    if (models.empty()) return true;
    for (const auto& m : models) {
      if (m == model) return true;
    }
    return false;
  }
  bool may_use_tool(std::string_view tool) const {
    if (tools.empty()) return true;
    for (const std::string_view t : tools) {
      if (t == tool) return true;
      // "<server>__*": every tool whose name starts with "<server>__".
      if (t.size() > 3 && t.ends_with("__*") && tool.size() > t.size() - 1 &&
          tool.starts_with(t.substr(0, t.size() - 1))) {
        return true;
      }
    }
    return false;
  }
};

inline const char* role_name(Role r) { return r == Role::kOwner ? "owner" : "member"; }

}  // namespace alou

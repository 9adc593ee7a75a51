#pragma once
// redis://[[user]:password@]host[:port][/db] parsing, private to the Redis
// KV. Error messages never contain the password.
#include "alou/core/error.hpp"

#include <string>
#include <string_view>

namespace alou::storage {

struct RedisUrl {
  std::string host;
  std::string port = "6379";
  std::string user;      // empty: AUTH <password> (pre-ACL form)
  std::string password;  // empty: no AUTH
  int db = 0;
};

Result<RedisUrl> parse_redis_url(std::string_view url);

}  // namespace alou::storage

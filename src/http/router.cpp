#include "alou/http/router.hpp"

#include <stdexcept>

namespace alou::http {
namespace {

// Splits "/a/b/c" into {"a","b","c"}; "/" gives {}; a trailing slash gives a
// final empty segment so that "/a/" does not match "/a".
template <class Fn>
void for_each_segment(std::string_view path, Fn&& fn) {
  if (path.empty() || path == "/") return;
  std::size_t pos = path.front() == '/' ? 1 : 0;
  while (true) {
    const auto next = path.find('/', pos);
    fn(path.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
}

bool is_param(std::string_view seg) { return seg.size() > 2 && seg.front() == '{' && seg.back() == '}'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether `name` is one of the comma-separated methods in `allow` (a whole
// token: "LOCK" is not listed by "UNLOCK").
bool listed(std::string_view allow, std::string_view name) {
  while (!allow.empty()) {
    const auto comma = allow.find(", ");
    if (allow.substr(0, comma) == name) return true;
    if (comma == std::string_view::npos) break;
    allow.remove_prefix(comma + 2);
  }
  return false;
}

}  // namespace

bool percent_decode(std::string_view in, std::string& out, bool plus_as_space) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

Router& Router::add(Verb method, std::string_view pattern, Handler handler, RouteOptions options) {
  if (pattern.empty() || pattern.front() != '/') throw std::invalid_argument("route pattern must start with '/'");
  auto r = std::make_unique<Route>();
  r->method = method;
  r->pattern = std::string(pattern);
  r->handler = std::move(handler);
  r->options = options;
  for_each_segment(pattern, [&](std::string_view s) { r->segments.emplace_back(s); });
  r->index = routes_.size();
  routes_.push_back(std::move(r));
  return *this;
}

RouteMatch Router::match(Verb method, std::string_view path) const {
  // At most a few dozen routes: a linear scan over pre-split patterns is
  // faster than anything cleverer and allocates nothing until a match.
  std::string_view segs[32];
  std::size_t n = 0;
  bool too_deep = false;
  for_each_segment(path, [&](std::string_view s) {
    if (n < 32) {
      segs[n++] = s;
    } else {
      too_deep = true;
    }
  });
  RouteMatch m;
  if (too_deep) return m;
  const Verb want = method == Verb::head ? Verb::get : method;
  for (const auto& r : routes_) {
    if (r->segments.size() != n) continue;
    bool ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) {
      const auto& p = r->segments[i];
      ok = is_param(p) ? !segs[i].empty() : p == segs[i];
    }
    if (!ok) continue;
    if (r->method != want) {
      const auto name = bhttp::to_string(r->method);
      if (!listed(m.allow, name)) {
        if (!m.allow.empty()) m.allow += ", ";
        m.allow.append(name.data(), name.size());
      }
      continue;
    }
    m.route = r.get();
    m.allow.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& p = r->segments[i];
      if (!is_param(p)) continue;
      std::string value;
      if (!percent_decode(segs[i], value)) value = std::string(segs[i]);
      m.params.emplace_back(p.substr(1, p.size() - 2), std::move(value));
    }
    return m;
  }
  return m;
}

}  // namespace alou::http

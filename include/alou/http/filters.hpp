#pragma once
// The transport-level filters: request id, access log + metrics, CORS.
// (Size and time limits are enforced by the connection itself, before a
// request reaches the chain; auth and rate limits live in alou::auth.)
#include "alou/http/filter.hpp"

#include <memory>
#include <string>
#include <vector>

namespace alou::metrics {
class Registry;
}

namespace alou::http {

class Router;

// Accepts a client's x-request-id if well-formed (1-128 of [A-Za-z0-9._:-]),
// else generates one; echoes it on every response.
std::shared_ptr<Filter> make_request_id_filter();
// Access log line per request (method, path, status, bytes, duration) and
// the request metrics by route, method and status.
std::shared_ptr<Filter> make_observability_filter(metrics::Registry& registry, const Router& router,
                                                  bool access_log);
// CORS for the listed origins ("*" allows any); answers preflights (OPTIONS).
std::shared_ptr<Filter> make_cors_filter(std::vector<std::string> origins);

bool valid_request_id(std::string_view id);

}  // namespace alou::http

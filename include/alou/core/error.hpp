#pragma once
// Errors that cross a module boundary: a value with an HTTP status, a stable
// snake_case code and a message a user can act on. The HTTP layer renders it
// in the caller's format (OpenAI, Anthropic or Alou's own).
#include <boost/system/result.hpp>

#include <string>
#include <utility>

namespace alou {

struct Error {
  int status = 500;
  std::string code = "internal_error";
  std::string message = "internal error";

  static Error bad_request(std::string message, std::string code = "bad_request") {
    return {400, std::move(code), std::move(message)};
  }
  static Error unauthorized(std::string message, std::string code = "unauthorized") {
    return {401, std::move(code), std::move(message)};
  }
  static Error forbidden(std::string message, std::string code = "forbidden") {
    return {403, std::move(code), std::move(message)};
  }
  static Error not_found(std::string message, std::string code = "not_found") {
    return {404, std::move(code), std::move(message)};
  }
  static Error conflict(std::string message, std::string code = "conflict") {
    return {409, std::move(code), std::move(message)};
  }
  static Error unavailable(std::string message, std::string code = "unavailable") {
    return {503, std::move(code), std::move(message)};
  }
  static Error internal(std::string message, std::string code = "internal_error") {
    return {500, std::move(code), std::move(message)};
  }
};

// Thrown only by Result<T>::value() on an error; module edges return Results.
class ErrorException final : public std::exception {
 public:
  explicit ErrorException(Error e) : error_(std::move(e)) {}
  const char* what() const noexcept override { return error_.message.c_str(); }
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

[[noreturn]] inline void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw ErrorException(e);
}

template <class T>
using Result = boost::system::result<T, Error>;

}  // namespace alou

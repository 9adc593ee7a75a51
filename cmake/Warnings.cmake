add_library(alou_warnings INTERFACE)
target_compile_options(alou_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
  -Wunused -Woverloaded-virtual -Wimplicit-fallthrough
  # GCC 12: -Wnull-dereference/-Wmaybe-uninitialized give false positives
  # inside Asio at -O2 (keep them warnings, never errors), and
  # -Wmismatched-new-delete misfires on Asio's coroutine frame allocator.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-error=null-dereference -Wno-error=maybe-uninitialized -Wno-mismatched-new-delete>
  $<$<CXX_COMPILER_ID:Clang>:-Wno-unknown-warning-option>)
if(ALOU_WERROR)
  target_compile_options(alou_warnings INTERFACE -Werror)
endif()

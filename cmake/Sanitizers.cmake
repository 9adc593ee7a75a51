add_library(alou_sanitizers INTERFACE)
if(ALOU_SANITIZE)
  target_compile_options(alou_sanitizers INTERFACE
    -fsanitize=${ALOU_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(alou_sanitizers INTERFACE -fsanitize=${ALOU_SANITIZE})
endif()

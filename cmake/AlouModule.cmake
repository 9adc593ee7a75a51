# alou_module(NAME SOURCES a.cpp b.cpp PUBLIC_DEPS x PRIVATE_DEPS y)
# One static library per module: alou_<NAME>, alias alou::<NAME>, public
# headers under include/alou/<NAME>/, private ones next to the sources.
function(alou_module NAME)
  cmake_parse_arguments(M "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(alou_${NAME} STATIC ${M_SOURCES})
  add_library(alou::${NAME} ALIAS alou_${NAME})
  target_compile_features(alou_${NAME} PUBLIC cxx_std_20)
  target_include_directories(alou_${NAME}
    PUBLIC ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(alou_${NAME}
    PUBLIC ${M_PUBLIC_DEPS}
    PRIVATE ${M_PRIVATE_DEPS} alou_warnings alou_sanitizers)
endfunction()

# alou_test(NAME SOURCES ... DEPS ... LABEL unit|integration)
function(alou_test NAME)
  cmake_parse_arguments(T "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${NAME} ${T_SOURCES})
  target_include_directories(${NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main
    alou_warnings alou_sanitizers)
  # Tests find the source tree's migrations/ and web/ (the product binary
  # has no source path compiled in): the environment, and a definition for
  # the integration harness.
  gtest_discover_tests(${NAME} PROPERTIES LABELS ${T_LABEL}
                       ENVIRONMENT "ALOU_MIGRATIONS_DIR=${PROJECT_SOURCE_DIR}/migrations"
                       DISCOVERY_TIMEOUT 60)
  target_compile_definitions(${NAME} PRIVATE ALOU_TEST_WEB_DIR="${PROJECT_SOURCE_DIR}/web")
endfunction()

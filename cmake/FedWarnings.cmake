# Compiler warnings for project targets and the sanitizer switch. Applied per target
# with fed_target_defaults() so third-party flags are never touched.
set(FED_WARNING_FLAGS
    -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wformat=2 -Wvla -Wundef -Wcast-align -Wpointer-arith -Wnull-dereference
    -Wdouble-promotion -Wno-unused-parameter)
if(FED_WERROR)
  list(APPEND FED_WARNING_FLAGS -Werror)
endif()

if(FED_SANITIZE)
  set(FED_SAN_FLAGS -fsanitize=${FED_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options(${FED_SAN_FLAGS})
  add_link_options(${FED_SAN_FLAGS})
endif()

function(fed_target_defaults target)
  target_compile_options(${target} PRIVATE ${FED_WARNING_FLAGS})
  target_compile_definitions(${target} PRIVATE _POSIX_C_SOURCE=200809L)
endfunction()

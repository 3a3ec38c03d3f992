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

# Debian's hardening (what dpkg-buildflags gives packages) for the Release build that is
# installed and packaged: stack protector, _FORTIFY_SOURCE, full RELRO with immediate
# binding. Not with sanitizers; not in the -Werror RelWithDebInfo tree, where
# _FORTIFY_SOURCE's object sizes add -Wformat-truncation warnings on snprintf calls that
# truncate on purpose (cli/sim_sites.c).
option(FED_HARDEN "Hardening flags in Release builds" ON)
if(FED_HARDEN AND NOT FED_SANITIZE AND CMAKE_BUILD_TYPE STREQUAL "Release")
  add_compile_options(-fstack-protector-strong -D_FORTIFY_SOURCE=2)
  add_link_options(-Wl,-z,relro -Wl,-z,now)
endif()

function(fed_target_defaults target)
  target_compile_options(${target} PRIVATE ${FED_WARNING_FLAGS})
  target_compile_definitions(${target} PRIVATE _POSIX_C_SOURCE=200809L)
endfunction()

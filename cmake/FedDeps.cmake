# Finds every third-party dependency the normal way (pkg-config / find_package) and
# stops configuration with one line naming the Debian package to install when one is
# missing. scripts/setup installs all of them.
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "fedtune: pkg-config not found; install the Debian package pkg-config (or run scripts/setup)")
endif()

# fed_require_pkg(<prefix> <pkg-config module> <Debian package>)
macro(fed_require_pkg prefix module debpkg)
  pkg_check_modules(${prefix} QUIET IMPORTED_TARGET ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR "fedtune: ${module} not found; install the Debian package ${debpkg} (or run scripts/setup)")
  endif()
endmacro()

fed_require_pkg(OPENBLAS openblas libopenblas-dev)
fed_require_pkg(CJSON libcjson libcjson-dev)
fed_require_pkg(ZMQ libzmq libzmq3-dev)
fed_require_pkg(PROTOBUFC libprotobuf-c libprotobuf-c-dev)
# The monitoring server (net/http.c): libmicrohttpd with its TLS library.
fed_require_pkg(MHD libmicrohttpd libmicrohttpd-dev)
fed_require_pkg(GNUTLS gnutls libgnutls28-dev)

find_program(FED_PROTOC_C protoc-c)
if(NOT FED_PROTOC_C)
  message(FATAL_ERROR "fedtune: protoc-c not found; install the Debian package protobuf-c-compiler (or run scripts/setup)")
endif()

find_package(OpenSSL 3.0 QUIET)
if(NOT OPENSSL_FOUND)
  message(FATAL_ERROR "fedtune: OpenSSL >= 3.0 not found; install the Debian package libssl-dev (or run scripts/setup)")
endif()

find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "fedtune: zlib not found; install the Debian package zlib1g-dev (or run scripts/setup)")
endif()

find_library(FED_LIBM m)
find_package(Threads REQUIRED)

# libunistring (NFKC for the tokenizer, dataset/tokenizer.c): no pkg-config file on Debian.
find_path(FED_UNISTRING_INCLUDE uninorm.h)
find_library(FED_UNISTRING_LIB unistring)
if(NOT FED_UNISTRING_INCLUDE OR NOT FED_UNISTRING_LIB)
  message(FATAL_ERROR "fedtune: libunistring not found; install the Debian package libunistring-dev (or run scripts/setup)")
endif()
add_library(Fed::Unistring UNKNOWN IMPORTED)
set_target_properties(Fed::Unistring PROPERTIES IMPORTED_LOCATION "${FED_UNISTRING_LIB}"
  INTERFACE_INCLUDE_DIRECTORIES "${FED_UNISTRING_INCLUDE}")

# MPI for `mpirun -n N fedtune sim` (cli/mpi.c), optional: FED_MPI AUTO uses it when found,
# ON stops configuration without it, OFF leaves it out (then --mpi says how to get it).
set(FED_MPI AUTO CACHE STRING "MPI for mpirun fedtune sim: AUTO, ON or OFF")
set_property(CACHE FED_MPI PROPERTY STRINGS AUTO ON OFF)
if(NOT FED_MPI MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "fedtune: FED_MPI is ${FED_MPI}; give AUTO, ON or OFF")
endif()
set(FED_HAVE_MPI OFF)
if(NOT FED_MPI STREQUAL "OFF")
  find_package(MPI QUIET COMPONENTS C)
  if(MPI_C_FOUND)
    set(FED_HAVE_MPI ON)
  elseif(FED_MPI STREQUAL "ON")
    message(FATAL_ERROR "fedtune: MPI not found (FED_MPI=ON); install the Debian packages libopenmpi-dev and openmpi-bin (or run scripts/setup)")
  endif()
endif()

# The Debian packages: `cpack -G DEB` in a build configured with CMAKE_INSTALL_PREFIX=/usr
# (and CMAKE_BUILD_TYPE=Release) makes three, one per install component, as Debian lays a
# program with a library out:
#   fedtune_<v>_<arch>.deb         the programs, man pages, the service, docs (component
#                                  fedtune, cmake/FedInstall.cmake); runtime dependencies
#                                  from dpkg-shlibdeps plus openssl (fedtune-certs) and
#                                  adduser (the maintainer scripts), the maintainer scripts,
#                                  /etc/fedtune/coordinator.ini as a conffile;
#   libfedtune0_<v>_<arch>.deb     libfedtune.so.0 (component libfedtune, api/), its shlibs
#                                  file and the ldconfig trigger;
#   libfedtune-dev_<v>_<arch>.deb  headers, the libfedtune.so link, fedtune.pc and the CMake
#                                  package (component libfedtune-dev), on libfedtune0 of
#                                  the same version.
# Each carries the copyright and changelog of packaging/debian/; lintian's overrides,
# with the reason for each, are in docs/INSTALL.md. The fedtune program does not link the
# shared library (it is built from the static layers), so it does not need libfedtune0.
# No real address yet: .invalid (RFC 2606) says so; set the real one when there is one.
set(FED_PACKAGE_MAINTAINER "fedtune developers <dev@fedtune.invalid>" CACHE STRING
  "Maintainer field of the Debian package and its changelog")
# The Debian revision: the package is not native (fedtune_<version>-<revision>_<arch>.deb).
set(FED_PACKAGE_REVISION 1 CACHE STRING "Debian revision of the package")

# Files only the package has: the copyright, the changelog, lintian's overrides.
set(FED_PKG_DIR ${CMAKE_BINARY_DIR}/packaging)
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/changelog.in ${FED_PKG_DIR}/changelog @ONLY)
execute_process(COMMAND gzip -9n -c ${FED_PKG_DIR}/changelog
  OUTPUT_FILE ${FED_PKG_DIR}/changelog.Debian.gz RESULT_VARIABLE FED_GZIP_RC)
if(NOT FED_GZIP_RC EQUAL 0)
  message(FATAL_ERROR "fedtune: gzip failed on ${FED_PKG_DIR}/changelog")
endif()
foreach(pkg fedtune:fedtune libfedtune:libfedtune0 libfedtune-dev:libfedtune-dev)
  string(REPLACE ":" ";" pair ${pkg})
  list(GET pair 0 component)
  list(GET pair 1 name)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright ${FED_PKG_DIR}/changelog.Debian.gz
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${name} COMPONENT ${component})
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/lintian-overrides
  DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides RENAME fedtune COMPONENT fedtune)
foreach(pkg libfedtune:libfedtune0 libfedtune-dev:libfedtune-dev)
  string(REPLACE ":" ";" pair ${pkg})
  list(GET pair 0 component)
  list(GET pair 1 name)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/lintian-overrides.${name}
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides RENAME ${name} COMPONENT ${component})
endforeach()

# The control files: maintainer scripts as they are, conffiles from the configured path.
file(WRITE ${FED_PKG_DIR}/conffiles.tmp "${FED_FULL_CONFDIR}/coordinator.ini\n")
configure_file(${FED_PKG_DIR}/conffiles.tmp ${FED_PKG_DIR}/conffiles COPYONLY)
foreach(s postinst prerm postrm)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${s} ${FED_PKG_DIR}/${s} COPYONLY)
endforeach()

# A shared library in the package (libfedtune, api/): a shlibs file for the packages
# linking to it, and the ldconfig trigger (lintian: no-shlibs, lacks-ldconfig-trigger).
function(fed_shared_libraries dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  set(found "")
  foreach(t ${targets})
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "SHARED_LIBRARY")
      list(APPEND found ${t})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(d ${subdirs})
    fed_shared_libraries(${d} more)
    list(APPEND found ${more})
  endforeach()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()
fed_shared_libraries(${PROJECT_SOURCE_DIR} FED_SHARED_LIBS)
set(CPACK_DEBIAN_FEDTUNE_PACKAGE_CONTROL_EXTRA
  ${FED_PKG_DIR}/conffiles ${FED_PKG_DIR}/postinst ${FED_PKG_DIR}/prerm ${FED_PKG_DIR}/postrm)
if(NOT FED_SHARED_LIBS)
  message(FATAL_ERROR "fedtune: the libfedtune0 package needs the shared library (api/)")
endif()
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
file(WRITE ${FED_PKG_DIR}/triggers.tmp "activate-noawait ldconfig\n")
configure_file(${FED_PKG_DIR}/triggers.tmp ${FED_PKG_DIR}/triggers COPYONLY)
set(CPACK_DEBIAN_LIBFEDTUNE_PACKAGE_CONTROL_EXTRA ${FED_PKG_DIR}/triggers)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedtune)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the fedtune developers")
set(CPACK_PACKAGE_CONTACT "${FED_PACKAGE_MAINTAINER}")
# Each package's description: its summary line, then the extended text, lines under 80
# columns. No CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPack would put that one summary before
# every package's description.
set(CPACK_DEBIAN_FEDTUNE_DESCRIPTION "federated fine-tuning of neural networks
fedtune trains and fine-tunes neural networks (MLPs, CNNs, transformers,
LoRA adapters) alone or as a federation: a coordinator and data-owning
sites that keep their data and exchange only model updates over mutual
TLS, with robust aggregation, differential privacy, secure aggregation
and compressed updates. The package holds the fedtune program,
fedtune-certs (the federation's certificates), their manual pages and the
fedtune-coordinator systemd service.")
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${FED_PACKAGE_REVISION})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${FED_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL fedtune libfedtune libfedtune-dev)
set(CPACK_DEBIAN_FEDTUNE_PACKAGE_NAME fedtune)
set(CPACK_DEBIAN_FEDTUNE_PACKAGE_DEPENDS "openssl, adduser")
set(CPACK_DEBIAN_LIBFEDTUNE_PACKAGE_NAME libfedtune0)
set(CPACK_DEBIAN_LIBFEDTUNE_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIBFEDTUNE_DESCRIPTION "federated fine-tuning: the embeddable site library
libfedtune lets a C or C++ program be a site of a fedtune federation
without running the fedtune program: create a site from a configuration,
feed it labeled data (arrays or a callback), run or step it, and read its
events and metrics (include/fedtune/fedtune.h, docs/EMBED.md).")
set(CPACK_DEBIAN_LIBFEDTUNE-DEV_PACKAGE_NAME libfedtune-dev)
set(CPACK_DEBIAN_LIBFEDTUNE-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_LIBFEDTUNE-DEV_PACKAGE_DEPENDS
  "libfedtune0 (= ${PROJECT_VERSION}-${FED_PACKAGE_REVISION})")
set(CPACK_DEBIAN_LIBFEDTUNE-DEV_DESCRIPTION "federated fine-tuning: the site library's development files
The header fedtune/fedtune.h, the libfedtune.so link, the pkg-config file
fedtune.pc and the CMake package (find_package(fedtune CONFIG), target
fedtune::fedtune) for building programs that embed a fedtune site.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "fedtune: CMAKE_INSTALL_PREFIX is ${CMAKE_INSTALL_PREFIX}; configure with "
    "-DCMAKE_INSTALL_PREFIX=/usr to make the Debian package (cpack -G DEB)")
endif()
include(CPack)

# The Debian package: `cpack -G DEB` in a build configured with CMAKE_INSTALL_PREFIX=/usr
# (and CMAKE_BUILD_TYPE=Release) makes fedtune_<version>_<arch>.deb from the install rules
# (cmake/FedInstall.cmake, api/): runtime dependencies from dpkg-shlibdeps plus openssl
# (fedtune-certs) and adduser (the maintainer scripts), the maintainer scripts and
# copyright of packaging/debian/, the changelog, /etc/fedtune/coordinator.ini as a
# conffile, and lintian's overrides with the reason for each (docs/INSTALL.md).
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
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright ${FED_PKG_DIR}/changelog.Debian.gz
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/lintian-overrides
  DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides RENAME fedtune)

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
set(FED_CONTROL_EXTRA
  ${FED_PKG_DIR}/conffiles ${FED_PKG_DIR}/postinst ${FED_PKG_DIR}/prerm ${FED_PKG_DIR}/postrm)
if(FED_SHARED_LIBS)
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
  file(WRITE ${FED_PKG_DIR}/triggers.tmp "activate-noawait ldconfig\n")
  configure_file(${FED_PKG_DIR}/triggers.tmp ${FED_PKG_DIR}/triggers COPYONLY)
  list(APPEND FED_CONTROL_EXTRA ${FED_PKG_DIR}/triggers)
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedtune)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the fedtune developers")
set(CPACK_PACKAGE_CONTACT "${FED_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "federated fine-tuning of neural networks")
# The extended description (CPack puts the summary before it), lines under 80 columns.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "fedtune trains and fine-tunes neural networks (MLPs, CNNs, transformers,
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
set(CPACK_DEBIAN_PACKAGE_DEPENDS "openssl, adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${FED_CONTROL_EXTRA})
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "fedtune: CMAKE_INSTALL_PREFIX is ${CMAKE_INSTALL_PREFIX}; configure with "
    "-DCMAKE_INSTALL_PREFIX=/usr to make the Debian package (cpack -G DEB)")
endif()
include(CPack)

# What `cmake --install` puts where (GNUInstallDirs; included by the top CMakeLists after
# every target exists), and the manual pages, made at build time from the option tables.
# The shared library, its headers, fedtune.pc and the CMake package install from api/.
#
# Configured with CMAKE_INSTALL_PREFIX=/usr (the Debian package), the configuration goes
# to /etc/fedtune and the systemd unit to /lib/systemd/system; with any other prefix both
# stay inside it (<prefix>/etc/fedtune, <prefix>/lib/systemd/system), so that
# `cmake --install build --prefix DIR` never writes outside DIR.

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(FED_CONFDIR_DEFAULT "${CMAKE_INSTALL_FULL_SYSCONFDIR}/fedtune")
  set(FED_UNITDIR_DEFAULT "/lib/systemd/system")
else()
  set(FED_CONFDIR_DEFAULT "${CMAKE_INSTALL_SYSCONFDIR}/fedtune")
  set(FED_UNITDIR_DEFAULT "lib/systemd/system")
endif()
# FED_INSTALL_CONFDIR / FED_INSTALL_UNITDIR (-D...): where coordinator.ini and the systemd
# unit go (relative: under the install prefix). Not cached when not given, so that a tree
# configured again with another prefix follows it (a cached /usr/local default would put
# the configuration under /usr/etc once the prefix is /usr).
if(NOT FED_INSTALL_CONFDIR)
  set(FED_INSTALL_CONFDIR "${FED_CONFDIR_DEFAULT}")
endif()
if(NOT FED_INSTALL_UNITDIR)
  set(FED_INSTALL_UNITDIR "${FED_UNITDIR_DEFAULT}")
endif()
foreach(v CONFDIR UNITDIR)
  if(IS_ABSOLUTE "${FED_INSTALL_${v}}")
    set(FED_FULL_${v} "${FED_INSTALL_${v}}")
  else()
    set(FED_FULL_${v} "${CMAKE_INSTALL_PREFIX}/${FED_INSTALL_${v}}")
  endif()
endforeach()
# The service's state and logs: systemd's StateDirectory=/LogsDirectory= (fixed paths).
set(FED_STATEDIR "/var/lib/fedtune")
set(FED_LOGDIR "/var/log/fedtune")

# Everything here belongs to the fedtune package; api/ names its own components
# (libfedtune: the shared library, libfedtune-dev: headers, fedtune.pc, the CMake package).
set(CMAKE_INSTALL_DEFAULT_COMPONENT_NAME fedtune)

# ---- programs
install(TARGETS fedtune RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${PROJECT_SOURCE_DIR}/certs/fedtune-certs DESTINATION ${CMAKE_INSTALL_BINDIR})

# ---- the coordinator service: its unit and its configuration (a conffile in the .deb)
configure_file(${PROJECT_SOURCE_DIR}/packaging/fedtune-coordinator.service.in
  ${CMAKE_BINARY_DIR}/packaging/fedtune-coordinator.service @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/packaging/coordinator.ini.in
  ${CMAKE_BINARY_DIR}/packaging/coordinator.ini @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/fedtune-coordinator.service
  DESTINATION ${FED_INSTALL_UNITDIR})
install(FILES ${CMAKE_BINARY_DIR}/packaging/coordinator.ini DESTINATION ${FED_INSTALL_CONFDIR})

# ---- documentation and sample configurations (share/doc/fedtune)
file(GLOB FED_DOCS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
list(FILTER FED_DOCS EXCLUDE REGEX "/STYLE\\.md$") # the house style is for contributors
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${FED_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/certs/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
  RENAME CERTS.md)
file(GLOB FED_SAMPLE_CONFIGS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/examples/*.ini)
install(FILES ${FED_SAMPLE_CONFIGS} DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/archs ${PROJECT_SOURCE_DIR}/examples/three-terminals
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# ---- manual pages: fedtune(1), fedtune-<command>(1), fedtune-certs(1), made by
# packaging/gen-man.sh from `fedtune --man` / `fedtune <command> --man` (the option
# tables) and from fedtune-certs' --help texts; man/man1/*.1 for the tests, gzipped
# copies in man/gz/ for installation.
target_compile_definitions(fedtune PRIVATE FED_MAN_DOCDIR="${CMAKE_INSTALL_FULL_DOCDIR}"
  FED_MAN_SYSCONFDIR="${CMAKE_INSTALL_FULL_SYSCONFDIR}" FED_MAN_UNITDIR="${FED_FULL_UNITDIR}")
set(FED_MAN_DIR ${CMAKE_BINARY_DIR}/man)
add_custom_command(OUTPUT ${FED_MAN_DIR}/stamp
  COMMAND sh ${PROJECT_SOURCE_DIR}/packaging/gen-man.sh $<TARGET_FILE:fedtune>
          ${PROJECT_SOURCE_DIR}/certs/fedtune-certs ${FED_MAN_DIR}
  DEPENDS fedtune ${PROJECT_SOURCE_DIR}/packaging/gen-man.sh
          ${PROJECT_SOURCE_DIR}/packaging/certs-man.awk ${PROJECT_SOURCE_DIR}/certs/fedtune-certs
  COMMENT "Generating the manual pages"
  VERBATIM)
add_custom_target(man ALL DEPENDS ${FED_MAN_DIR}/stamp)
install(DIRECTORY ${FED_MAN_DIR}/gz/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

/*
 * netaddr - client addresses: text form and network (CIDR) matching.
 *
 * Exports:
 *   netaddr_str          numeric text of a sockaddr (IPv4-mapped IPv6 shown
 *                        as IPv4)
 *   netaddr_in_list      is the address inside any "addr/len" or "addr" of a
 *                        list (mynetworks); malformed entries never match
 *   netaddr_check_cidr   validate one list entry (for configuration checks)
 * Trusts: list entries come from the configuration and are validated.
 */
#ifndef TERN_CORE_NETADDR_H
#define TERN_CORE_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

#include "conf/conf.h"

void netaddr_str(const struct sockaddr_storage *ss, char *out, size_t outlen);
int netaddr_in_list(const struct conf_list *list, const struct sockaddr_storage *ss);
int netaddr_check_cidr(const char *entry);

#endif

/* UTF-8 validation for text that arrives from outside (file headers, protocol
 * strings): overlong forms, surrogates and code points above U+10FFFF are invalid. */
#ifndef FED_UTF8_H
#define FED_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence starting with the non-ASCII byte s[0] (n >= 1
 * bytes available), or 0 when it is invalid. */
size_t fed_utf8_seq(const unsigned char *s, size_t n);

/* Decodes the code point at s, which must start a valid UTF-8 sequence (checked
 * before), into *cp; returns its length in bytes. */
size_t fed_utf8_decode(const unsigned char *s, uint32_t *cp);

/* Offset of the first invalid byte of s[0..n), or n when all of it is valid UTF-8. */
size_t fed_utf8_bad_at(const char *s, size_t n);

#endif

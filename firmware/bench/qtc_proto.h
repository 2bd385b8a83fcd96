/* qtc bench protocol: framed binary messages over a byte stream (UART, USB serial,
 * TCP socket, pty).  The same definitions are mirrored in toolchain/qtc/device/protocol.py
 * and documented in docs/protocol.md.
 *
 * Frame:  'Q' 'T' | version u8 | type u8 | seq u8 | len u16le | payload[len] | crc16le
 * CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version..payload.
 */
#ifndef QTC_PROTO_H
#define QTC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define QTC_PROTO_VERSION 1u
#define QTC_PROTO_MAGIC0 0x51u /* 'Q' */
#define QTC_PROTO_MAGIC1 0x54u /* 'T' */
#define QTC_PROTO_HEADER 7u    /* magic(2) version type seq len(2) */
#define QTC_PROTO_OVERHEAD 9u  /* header + crc */
#ifndef QTC_PROTO_MAX_PAYLOAD
#define QTC_PROTO_MAX_PAYLOAD 1024u
#endif

/* host -> device requests; every request gets exactly one reply with the same seq */
enum {
    QTC_MSG_HELLO = 0x01,        /* ()                          -> INFO */
    QTC_MSG_WRITE_INPUT = 0x02,  /* (u32 offset, bytes)         -> ACK(u32 offset, u16 len) */
    QTC_MSG_RUN = 0x03,          /* (u16 runs, u16 warmup)      -> RESULT */
    QTC_MSG_READ_SAMPLES = 0x04, /* (u16 start, u16 count)      -> SAMPLES */
    QTC_MSG_READ_OUTPUT = 0x05,  /* (u32 offset, u16 len)       -> OUTPUT */
    QTC_MSG_BYE = 0x06,          /* ()                          -> ACK, then the session ends */
    /* device -> host */
    QTC_MSG_ACK = 0x80,
    QTC_MSG_INFO = 0x81,
    QTC_MSG_RESULT = 0x83,
    QTC_MSG_SAMPLES = 0x84,
    QTC_MSG_OUTPUT = 0x85,
    QTC_MSG_BOOT = 0x8F,  /* unsolicited, seq 0: the board has just (re)started */
    QTC_MSG_ERROR = 0xEE  /* (u8 code, u8 0, u16 0, u32 detail, text) */
};

enum {
    QTC_ERR_VERSION = 1,   /* detail: the device's protocol version */
    QTC_ERR_TYPE = 2,      /* detail: the unknown type */
    QTC_ERR_LENGTH = 3,    /* detail: the payload length received */
    QTC_ERR_RANGE = 4,     /* detail: the offending offset/start */
    QTC_ERR_RUNS = 5,      /* detail: the device's max runs per RUN */
    QTC_ERR_INVOKE = 6,    /* detail: qtc_model_invoke's return code */
    QTC_ERR_NO_RESULT = 7  /* READ_SAMPLES/READ_OUTPUT before any RUN */
};

/* timing kinds reported in INFO */
enum {
    QTC_TIMING_CYCLES = 0,   /* a real board: cycle counter at cpu_hz */
    QTC_TIMING_EMULATED = 1, /* an emulator: retired instructions, us = instr / nominal MHz */
    QTC_TIMING_HOST = 2      /* the build machine: wall clock */
};

#define QTC_INFO_HAS_CYCLES 0x01u
#define QTC_INFO_HAS_INSTRET 0x02u
#define QTC_INFO_HAS_STACK 0x04u

#define QTC_SAMPLE_BYTES 12u /* u32 cycles, u32 instructions, u32 us */
#define QTC_STACK_UNKNOWN 0xFFFFFFFFu

uint16_t qtc_crc16(uint16_t crc, const uint8_t *data, size_t len);

/* Incremental frame parser with resynchronisation: bytes that cannot start a
 * valid frame are skipped, a candidate that fails (bad length, bad CRC) is
 * rescanned from its next byte, and an incomplete candidate gives way to a
 * whole valid frame that starts inside it (garbage or a frame cut short by a
 * reset, followed by a real frame), so a real frame right after garbage is found. */
#define QTC_PARSER_ALTS 4
typedef struct {
    uint8_t buf[QTC_PROTO_MAX_PAYLOAD + QTC_PROTO_OVERHEAD];
    size_t n;
    size_t consumed;  /* bytes of the last returned frame, removed on the next feed */
    uint32_t dropped; /* bytes discarded while resyncing */
    uint16_t alt[QTC_PARSER_ALTS]; /* offsets > 0 of "QT" inside the candidate */
    uint8_t nalt;
} qtc_parser_t;

typedef struct {
    uint8_t version, type, seq;
    uint16_t len;
    const uint8_t *payload; /* points into the parser's buffer until the next feed */
} qtc_frame_t;

void qtc_parser_reset(qtc_parser_t *p);
/* Feed one byte; returns 1 when a whole valid frame is available in *out. */
int qtc_parser_feed(qtc_parser_t *p, uint8_t byte, qtc_frame_t *out);

/* Build a frame into dst (room for len + QTC_PROTO_OVERHEAD); returns its size. */
size_t qtc_frame_build(uint8_t *dst, uint8_t version, uint8_t type, uint8_t seq,
                       const uint8_t *payload, uint16_t len);

/* little-endian helpers */
static inline void qtc_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void qtc_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint16_t qtc_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t qtc_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

#endif

/* Frame codec for the qtc bench protocol (see qtc_proto.h, docs/protocol.md). */
#include "qtc_proto.h"

#include <string.h>

uint16_t qtc_crc16(uint16_t crc, const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(data[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

void qtc_parser_reset(qtc_parser_t *p) { p->n = 0; p->consumed = 0; p->nalt = 0; }

static void find_alts(qtc_parser_t *p) {
    p->nalt = 0;
    for (size_t i = 1; i + 1 < p->n && p->nalt < QTC_PARSER_ALTS; i++)
        if (p->buf[i] == QTC_PROTO_MAGIC0 && p->buf[i + 1] == QTC_PROTO_MAGIC1) p->alt[p->nalt++] = (uint16_t)i;
}

static void drop_bytes(qtc_parser_t *p, size_t i) {
    p->dropped += (uint32_t)i;
    memmove(p->buf, p->buf + i, p->n - i);
    p->n -= i;
    find_alts(p);
}

/* Drop the first buffered byte and everything up to the next possible magic. */
static void drop_candidate(qtc_parser_t *p) {
    size_t i = 1;
    while (i < p->n && p->buf[i] != QTC_PROTO_MAGIC0) i++;
    drop_bytes(p, i);
}

/* 1 if a whole CRC-valid frame starts at offset i and ends at the last byte. */
static int valid_frame_at(const qtc_parser_t *p, size_t i) {
    if (p->n - i < QTC_PROTO_OVERHEAD) return 0;
    uint16_t len = qtc_get_u16(p->buf + i + 5);
    if (len > QTC_PROTO_MAX_PAYLOAD || i + QTC_PROTO_OVERHEAD + len != p->n) return 0;
    return qtc_crc16(0xFFFFu, p->buf + i + 2, 5u + len) == qtc_get_u16(p->buf + i + QTC_PROTO_HEADER + len);
}

/* The candidate at 0 is incomplete: does a valid frame inside it end here? */
static int skip_to_inner_frame(qtc_parser_t *p) {
    for (uint8_t k = 0; k < p->nalt; k++)
        if (valid_frame_at(p, p->alt[k])) {
            drop_bytes(p, p->alt[k]);
            return 1;
        }
    return 0;
}

/* Check the buffered bytes; returns 1 on a whole valid frame, 0 when the
 * buffer is a plausible prefix (need more bytes). Rescans after failures. */
static int scan(qtc_parser_t *p, qtc_frame_t *out) {
    for (;;) {
        if (p->n == 0) return 0;
        if (p->buf[0] != QTC_PROTO_MAGIC0) { drop_candidate(p); continue; }
        if (p->n < 2) return 0;
        if (p->buf[1] != QTC_PROTO_MAGIC1) { drop_candidate(p); continue; }
        if (p->n < QTC_PROTO_HEADER) return 0;
        uint16_t len = qtc_get_u16(p->buf + 5);
        if (len > QTC_PROTO_MAX_PAYLOAD) { drop_candidate(p); continue; }
        size_t total = QTC_PROTO_OVERHEAD + len;
        if (p->n < total) {
            if (skip_to_inner_frame(p)) continue;
            return 0;
        }
        uint16_t want = qtc_get_u16(p->buf + QTC_PROTO_HEADER + len);
        if (qtc_crc16(0xFFFFu, p->buf + 2, 5u + len) != want) { drop_candidate(p); continue; }
        out->version = p->buf[2];
        out->type = p->buf[3];
        out->seq = p->buf[4];
        out->len = len;
        out->payload = p->buf + QTC_PROTO_HEADER;
        p->consumed = total; /* the frame stays readable until the next feed */
        return 1;
    }
}

int qtc_parser_feed(qtc_parser_t *p, uint8_t byte, qtc_frame_t *out) {
    if (p->consumed) {
        memmove(p->buf, p->buf + p->consumed, p->n - p->consumed);
        p->n -= p->consumed;
        p->consumed = 0;
        find_alts(p);
    }
    if (p->n == 0 && byte != QTC_PROTO_MAGIC0) { p->dropped++; return 0; }
    p->buf[p->n++] = byte;
    if (p->n >= 3 && byte == QTC_PROTO_MAGIC1 && p->buf[p->n - 2] == QTC_PROTO_MAGIC0 &&
        p->nalt < QTC_PARSER_ALTS)
        p->alt[p->nalt++] = (uint16_t)(p->n - 2);
    return scan(p, out);
}

size_t qtc_frame_build(uint8_t *dst, uint8_t version, uint8_t type, uint8_t seq,
                       const uint8_t *payload, uint16_t len) {
    dst[0] = QTC_PROTO_MAGIC0;
    dst[1] = QTC_PROTO_MAGIC1;
    dst[2] = version;
    dst[3] = type;
    dst[4] = seq;
    qtc_put_u16(dst + 5, len);
    if (len && payload != dst + QTC_PROTO_HEADER) memmove(dst + QTC_PROTO_HEADER, payload, len);
    qtc_put_u16(dst + QTC_PROTO_HEADER + len, qtc_crc16(0xFFFFu, dst + 2, 5u + len));
    return QTC_PROTO_OVERHEAD + len;
}

/* ESP-IDF shim (tests only): the CPU cycle counter. */
#pragma once
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef uint32_t esp_cpu_cycle_count_t;
esp_cpu_cycle_count_t esp_cpu_get_cycle_count(void);
#ifdef __cplusplus
}
#endif

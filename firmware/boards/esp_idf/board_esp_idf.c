/* Board support for ESP-IDF (ESP32, ESP32-S3, ESP32-C3, ...).
 *
 * - link: the console UART through the UART driver (default UART0, the
 *   devkits' USB-UART bridge), or the USB-Serial-JTAG port when the console
 *   is configured there (CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG);
 * - timing: the CPU cycle counter (esp_cpu_get_cycle_count, per core, so the
 *   bench task is pinned to core 0) at CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ, and
 *   esp_timer_get_time() for microseconds;
 * - stack: FreeRTOS's high-water mark of the bench task (its stack is painted
 *   when the task is created), so it covers the whole task, not one run.
 * Logging is silenced after boot so only frames travel on the port. */
#include <stdint.h>
#include <string.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"
#if defined(CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG)
#include "driver/usb_serial_jtag.h"
#endif

#include "qtc_board.h"
#include "qtc_proto.h"

#ifndef QTC_BENCH_STACK_BYTES
#define QTC_BENCH_STACK_BYTES 16384
#endif
#ifndef QTC_UART_NUM
#ifdef CONFIG_ESP_CONSOLE_UART_NUM
#define QTC_UART_NUM CONFIG_ESP_CONSOLE_UART_NUM
#else
#define QTC_UART_NUM 0
#endif
#endif
#ifndef QTC_UART_BAUD
#define QTC_UART_BAUD 115200
#endif
#ifndef QTC_CPU_MHZ
#define QTC_CPU_MHZ CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ
#endif
#define QTC_IDLE_EVERY_US 50000 /* let the idle task (and its watchdog) run this often */

int qtc_bench_main(void);

static qtc_board_info_t info;
static uint32_t g_cycles_last, g_cycles_high;
static int64_t g_last_yield_us;

void board_init(void) {
    esp_log_level_set("*", ESP_LOG_NONE);
#if defined(CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG)
    usb_serial_jtag_driver_config_t cfg = USB_SERIAL_JTAG_DRIVER_CONFIG_DEFAULT();
    cfg.rx_buffer_size = 2048;
    cfg.tx_buffer_size = 2048;
    usb_serial_jtag_driver_install(&cfg);
#else
    uart_driver_install((uart_port_t)QTC_UART_NUM, 4096, 0, 0, NULL, 0);
    uart_set_baudrate((uart_port_t)QTC_UART_NUM, QTC_UART_BAUD);
#endif
    info.name = CONFIG_IDF_TARGET;
    info.timing_kind = QTC_TIMING_CYCLES;
    info.flags = QTC_INFO_HAS_CYCLES | QTC_INFO_HAS_STACK;
    info.cpu_hz = (uint32_t)QTC_CPU_MHZ * 1000000u;
    info.stack_bytes = QTC_BENCH_STACK_BYTES;
    g_last_yield_us = esp_timer_get_time();
}

const qtc_board_info_t *board_info(void) { return &info; }

static TickType_t ticks(int32_t timeout_ms) {
    return timeout_ms < 0 ? portMAX_DELAY : pdMS_TO_TICKS((uint32_t)timeout_ms);
}

size_t board_read(uint8_t *buf, size_t len, int32_t timeout_ms) {
    if (len == 0) return 0;
#if defined(CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG)
    int n = usb_serial_jtag_read_bytes(buf, 1, ticks(timeout_ms));
    if (n <= 0) return 0;
    int more = usb_serial_jtag_read_bytes(buf + 1, (uint32_t)(len - 1), 0);
    return 1u + (size_t)(more > 0 ? more : 0);
#else
    int n = uart_read_bytes((uart_port_t)QTC_UART_NUM, buf, 1, ticks(timeout_ms));
    if (n <= 0) return 0;
    size_t avail = 0;
    uart_get_buffered_data_len((uart_port_t)QTC_UART_NUM, &avail);
    if (avail > len - 1) avail = len - 1;
    int more = avail ? uart_read_bytes((uart_port_t)QTC_UART_NUM, buf + 1, (uint32_t)avail, 0) : 0;
    return 1u + (size_t)(more > 0 ? more : 0);
#endif
}

void board_write(const uint8_t *buf, size_t len) {
#if defined(CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG)
    while (len) {
        int n = usb_serial_jtag_write_bytes(buf, len, portMAX_DELAY);
        if (n <= 0) return;
        buf += n;
        len -= (size_t)n;
    }
#else
    uart_write_bytes((uart_port_t)QTC_UART_NUM, buf, len);
#endif
}

/* The 32-bit cycle counter wraps every ~18 s at 240 MHz: extend it to 64 bits
 * (it is read at least once per inference, so one wrap between reads at most). */
uint64_t board_cycles(void) {
    uint32_t now = (uint32_t)esp_cpu_get_cycle_count();
    if (now < g_cycles_last) g_cycles_high++;
    g_cycles_last = now;
    return ((uint64_t)g_cycles_high << 32) | now;
}

uint64_t board_instructions(void) { return 0; }
uint64_t board_time_us(void) { return (uint64_t)esp_timer_get_time(); }

void board_stack_paint(void) {} /* FreeRTOS painted the task stack at creation */

uint32_t board_stack_used(void) {
    UBaseType_t free_bytes = uxTaskGetStackHighWaterMark(NULL); /* bytes on ESP-IDF */
    return (uint32_t)QTC_BENCH_STACK_BYTES - (uint32_t)free_bytes;
}

void board_idle(void) {
    int64_t now = esp_timer_get_time();
    if (now - g_last_yield_us >= QTC_IDLE_EVERY_US) {
        vTaskDelay(1);
        g_last_yield_us = esp_timer_get_time();
    }
}

void board_session_end(int status) { (void)status; } /* a real board keeps serving */

static void bench_task(void *arg) {
    (void)arg;
    qtc_bench_main(); /* returns only in self-test mode */
    for (;;) vTaskDelay(portMAX_DELAY);
}

void app_main(void) {
    xTaskCreatePinnedToCore(bench_task, "qtc_bench", QTC_BENCH_STACK_BYTES, NULL, tskIDLE_PRIORITY + 5, NULL, 0);
}

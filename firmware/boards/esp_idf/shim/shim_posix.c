/* ESP-IDF shim (tests only): the calls board_esp_idf.c makes, on a POSIX host.
 * UART/USB-Serial-JTAG = stdin/stdout, esp_timer = CLOCK_MONOTONIC, the cycle
 * counter = nanoseconds (so "cycles" at the nominal clock are not real cycles),
 * tasks run inline on the caller's thread, and a BYE ends the process only
 * because stdin closes.  Lets tests run the ESP-IDF board code over a pty. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "driver/uart.h"
#include "driver/usb_serial_jtag.h"
#include "esp_cpu.h"
#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/task.h"

void app_main(void);

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t esp_timer_get_time(void) { return (int64_t)(now_ns() / 1000u); }
esp_cpu_cycle_count_t esp_cpu_get_cycle_count(void) { return (esp_cpu_cycle_count_t)now_ns(); }
void esp_log_level_set(const char *tag, esp_log_level_t level) { (void)tag; (void)level; }

static int read_fd(void *buf, uint32_t length, TickType_t ticks) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    int ms = ticks == portMAX_DELAY ? -1 : (int)((uint64_t)ticks * 1000u / configTICK_RATE_HZ);
    int r;
    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return 0;
    ssize_t n = read(STDIN_FILENO, buf, length);
    if (n <= 0) exit(0); /* the host hung up */
    return (int)n;
}

static int write_fd(const void *src, size_t size) {
    const unsigned char *p = src;
    size_t left = size;
    while (left) {
        ssize_t n = write(STDOUT_FILENO, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) exit(0);
        p += n;
        left -= (size_t)n;
    }
    return (int)size;
}

esp_err_t uart_driver_install(uart_port_t uart_num, int rx_buffer_size, int tx_buffer_size, int queue_size,
                              QueueHandle_t *uart_queue, int intr_alloc_flags) {
    (void)uart_num; (void)rx_buffer_size; (void)tx_buffer_size; (void)queue_size; (void)uart_queue;
    (void)intr_alloc_flags;
    if (isatty(STDIN_FILENO)) {
        struct termios t;
        if (tcgetattr(STDIN_FILENO, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(STDIN_FILENO, TCSANOW, &t);
        }
    }
    return ESP_OK;
}

esp_err_t uart_set_baudrate(uart_port_t uart_num, uint32_t baudrate) { (void)uart_num; (void)baudrate; return ESP_OK; }

int uart_read_bytes(uart_port_t uart_num, void *buf, uint32_t length, TickType_t ticks_to_wait) {
    (void)uart_num;
    return length ? read_fd(buf, length, ticks_to_wait) : 0;
}

int uart_write_bytes(uart_port_t uart_num, const void *src, size_t size) { (void)uart_num; return write_fd(src, size); }

esp_err_t uart_get_buffered_data_len(uart_port_t uart_num, size_t *size) {
    (void)uart_num;
    *size = 0; /* unknown: the caller then returns the byte it has; the rest comes next read */
    return ESP_OK;
}

esp_err_t usb_serial_jtag_driver_install(usb_serial_jtag_driver_config_t *cfg) {
    (void)cfg;
    return uart_driver_install(0, 0, 0, 0, NULL, 0);
}

int usb_serial_jtag_read_bytes(void *buf, uint32_t length, TickType_t ticks_to_wait) {
    return length ? read_fd(buf, length, ticks_to_wait) : 0;
}

int usb_serial_jtag_write_bytes(const void *src, size_t size, TickType_t ticks_to_wait) {
    (void)ticks_to_wait;
    return write_fd(src, size);
}

BaseType_t xTaskCreatePinnedToCore(TaskFunction_t pxTaskCode, const char *const pcName, const uint32_t usStackDepth,
                                   void *const pvParameters, UBaseType_t uxPriority, TaskHandle_t *const pxCreatedTask,
                                   const BaseType_t xCoreID) {
    (void)pcName; (void)usStackDepth; (void)uxPriority; (void)xCoreID;
    if (pxCreatedTask) *pxCreatedTask = NULL;
    pxTaskCode(pvParameters); /* runs inline; the bench task never returns */
    return pdPASS;
}

void vTaskDelay(const TickType_t xTicksToDelay) {
    if (xTicksToDelay == portMAX_DELAY) exit(0); /* the self-test is over */
    struct timespec ts = {0, (long)((uint64_t)xTicksToDelay * 1000000000u / configTICK_RATE_HZ)};
    nanosleep(&ts, NULL);
}

void vTaskDelete(TaskHandle_t xTaskToDelete) { (void)xTaskToDelete; exit(0); }

UBaseType_t uxTaskGetStackHighWaterMark(TaskHandle_t xTask) {
    (void)xTask;
    return 0; /* not measured on the host: reports the whole stack as used */
}

int main(void) {
    app_main();
    return 0;
}

/* ESP-IDF shim (tests only): the sdkconfig values board_esp_idf.c reads. Override with -D. */
#pragma once
#ifndef CONFIG_IDF_TARGET
#define CONFIG_IDF_TARGET "esp32c3"
#endif
#ifndef CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ
#define CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ 160
#endif
#ifndef CONFIG_ESP_CONSOLE_UART_NUM
#define CONFIG_ESP_CONSOLE_UART_NUM 0
#endif
#ifndef CONFIG_FREERTOS_HZ
#define CONFIG_FREERTOS_HZ 1000
#endif

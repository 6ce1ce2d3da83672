/*
 * contactsync's Kommo widget: the account owner pastes the Unisender API key in the widget's settings,
 * confirms that it is sent to our server, optionally picks the Unisender list, and sees the connection.
 *
 * Only what Kommo documents for widgets is used: the AMD module returning a constructor with `callbacks`,
 * `self.get_settings()`, `self.system()`, `self.langs` and `self.$authorizedAjax` (a jQuery-style ajax call
 * that adds Kommo's signed one-time token as X-Auth-Token, which is how our server knows the account).
 * The page is built with plain DOM calls, and text from the server is only ever set as textContent.
 */
define(['jquery'], function () {
  'use strict';

  // Replaced by `contactsync widget build` with the service's public URL (a JSON string literal).
  var SERVICE_URL = "__CONTACTSYNC_SERVICE_URL__";
  var CSS_CLASS = 'contactsync-widget';

  var CustomWidget = function () {
    var self = this;
    var ui = null;

    function serviceHost() {
      var match = /^[a-z]+:\/\/([^/]+)/i.exec(SERVICE_URL);
      return match ? match[1] : SERVICE_URL;
    }

    // The text under `contactsync.<key>` of the current language, {name} placeholders filled in.
    function text(key, vars) {
      var langs = self.langs || {};
      var value = (langs.contactsync || {})[key];
      if (typeof value !== 'string') {
        value = key;
      }
      var all = vars || {};
      all.host = all.host || serviceHost();
      return value.replace(/\{(\w+)\}/g, function (whole, name) {
        return Object.prototype.hasOwnProperty.call(all, name) ? String(all[name]) : whole;
      });
    }

    function element(tag, className, content) {
      var node = document.createElement(tag);
      if (className) {
        node.className = className;
      }
      if (content !== undefined) {
        node.textContent = content;
      }
      return node;
    }

    // What a failed call says: the service's message and code (Unisender's reason for a refused key).
    function failure(xhr) {
      var body = xhr && xhr.responseJSON;
      if (!body && xhr && typeof xhr.responseText === 'string') {
        try {
          body = JSON.parse(xhr.responseText);
        } catch (ignored) {
          body = null;
        }
      }
      if (body && typeof body.detail === 'string') {
        return body.error ? body.detail + ' (' + body.error + ')' : body.detail;
      }
      if (!xhr || !xhr.status) {
        return text('unreachable');
      }
      return 'HTTP ' + xhr.status;
    }

    // One call to our service, authenticated by Kommo's widget token; a Promise of the JSON answer.
    function call(method, path, body) {
      var request = {url: SERVICE_URL + path, method: method, type: method, dataType: 'json'};
      if (body) {
        request.data = JSON.stringify(body);
        request.contentType = 'application/json';
      }
      return new Promise(function (resolve, reject) {
        self.$authorizedAjax(request).then(
          function (data) { resolve(data); },
          function (xhr) { reject(new Error(failure(xhr))); }
        );
      });
    }

    function showMessage(kind, message) {
      if (!ui) {
        return;
      }
      ui.message.textContent = message;
      ui.message.setAttribute('data-kind', kind);
      ui.message.hidden = !message;
    }

    function showConnection(state) {
      if (!ui) {
        return true; // the modal was closed meanwhile
      }
      var chosen = state.list_id;
      while (ui.list.options.length > 1) {
        ui.list.remove(1);
      }
      var title = chosen === null || chosen === undefined ? '' : String(chosen);
      (state.lists || []).forEach(function (item) {
        var option = element('option', '', item.title + ' (' + item.id + ')');
        option.value = String(item.id);
        option.selected = item.id === chosen;
        if (item.id === chosen) {
          title = item.title;
        }
        ui.list.appendChild(option);
      });
      ui.state.setAttribute('data-state', state.connected ? 'connected' : 'disconnected');
      ui.state.textContent = state.connected ? text('connected', {list: title}) : text('not_connected');
      if (state.lists_error) {
        showMessage('error', text('lists_error', {reason: state.lists_error}));
      } else if (state.last_error) {
        showMessage('error', text('last_error', {reason: state.last_error}));
      }
      return !state.lists_error && !state.last_error;
    }

    function refresh() {
      // A Promise of whether the connection is free of recorded problems.
      return call('GET', '/widget/connection').then(showConnection, function (error) {
        if (!ui) {
          return false;
        }
        ui.state.setAttribute('data-state', 'unknown');
        ui.state.textContent = '';
        showMessage('error', error.message);
        return false;
      });
    }

    function loadStyle(settings) {
      if (!settings.path || document.getElementById(CSS_CLASS + '-style')) {
        return;
      }
      var link = document.createElement('link');
      link.id = CSS_CLASS + '-style';
      link.rel = 'stylesheet';
      link.href = settings.path + '/style.css?v=' + encodeURIComponent(settings.version || '');
      document.head.appendChild(link);
    }

    // Where the settings modal lets the widget draw: the element Kommo passes, or the custom-content
    // block Kommo renders for the widget's code.
    function modalBody(given, settings) {
      if (given && given.nodeType === 1) {
        return given;
      }
      if (given && given[0] && given[0].nodeType === 1) {
        return given[0];
      }
      return document.getElementById(settings.widget_code + '_custom_content');
    }

    function renderSettings(given) {
      var settings = self.get_settings() || {};
      var container = modalBody(given, settings);
      if (!container) {
        return;
      }
      loadStyle(settings);
      var old = container.querySelector('.' + CSS_CLASS);
      if (old) {
        old.parentNode.removeChild(old);
      }
      var root = element('div', CSS_CLASS);
      var state = element('p', CSS_CLASS + '__state', text('loading'));
      state.setAttribute('data-state', 'loading');
      var field = element('label', CSS_CLASS + '__field', text('list_label'));
      var list = element('select', CSS_CLASS + '__list');
      list.name = 'contactsync_list_id';
      var fallback = element('option', '', text('list_default'));
      fallback.value = '';
      list.appendChild(fallback);
      field.appendChild(list);
      var consentLine = element('label', CSS_CLASS + '__consent');
      var consent = element('input', CSS_CLASS + '__consent-box');
      consent.type = 'checkbox';
      consent.name = 'contactsync_consent';
      consentLine.appendChild(consent);
      consentLine.appendChild(element('span', '', text('consent')));
      var message = element('p', CSS_CLASS + '__message');
      message.setAttribute('role', 'alert');
      message.hidden = true;
      root.appendChild(state);
      root.appendChild(field);
      root.appendChild(consentLine);
      root.appendChild(message);
      container.appendChild(root);
      ui = {root: root, state: state, list: list, consent: consent, message: message};
      return refresh();
    }

    function save(event) {
      var fields = (event && event.fields) || {};
      if (event && (event.active === false || event.active === 'N')) {
        return true; // being switched off: nothing to send
      }
      var key = String(fields.api_key || (self.get_settings() || {}).api_key || '').trim();
      if (!ui) {
        return false; // the modal was not drawn, so consent could not be asked: send nothing
      }
      if (!key) {
        showMessage('error', text('key_required'));
        return false;
      }
      if (!ui.consent.checked) {
        // Kommo's moderation rule: the key leaves Kommo only after the user agreed to it.
        showMessage('error', text('consent_required'));
        return false;
      }
      var body = {api_key: key};
      if (ui.list.value) {
        body.list_id = parseInt(ui.list.value, 10);
      }
      showMessage('busy', text('saving'));
      return call('POST', '/widget/key', body).then(
        function () {
          showMessage('ok', text('saved'));
          return refresh().then(function (clean) {
            if (clean) {
              showMessage('ok', text('saved')); // else the problem the service recorded stays in view
            }
            return true;
          });
        },
        function (error) {
          showMessage('error', text('refused', {reason: error.message}));
          return false;
        }
      );
    }

    this.callbacks = {
      render: function () { return true; },
      init: function () { return true; },
      bind_actions: function () { return true; },
      settings: function ($modalBody) { renderSettings($modalBody); },
      onSave: function (event) { return save(event); },
      destroy: function () {
        if (ui && ui.root.parentNode) {
          ui.root.parentNode.removeChild(ui.root);
        }
        ui = null;
      },
      advancedSettings: function () { return true; },
      contacts: {selected: function () { return true; }},
      leads: {selected: function () { return true; }}
    };
    return this;
  };

  return CustomWidget;
});

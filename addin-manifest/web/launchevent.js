Office.actions.associate("onMessageSendHandler", onMessageSendHandler);
